"""Regenerate tests/analysis/cases/NN_name/{old.c,new.c,expect.json} (run: python make_cases.py).
Expected findings are marked in new.c with `//! func:kind` comments (line = that line; `-:` = file
scope). The case directories are what the tests read; this file is how they were written."""
# ruff: noqa: E501
import json
import re
from pathlib import Path

OUT = Path(__file__).resolve().parent / "cases"
CASES = []

def case(name, verdict, note, old, new):
    CASES.append((name, verdict, note, old.strip("\n") + "\n", new.strip("\n") + "\n"))

PRE = """
typedef unsigned long size_t;
typedef long ssize_t;
typedef struct _IO_FILE FILE;
extern FILE *stderr;
void *malloc(size_t n);
void free(void *p);
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int snprintf(char *s, size_t n, const char *fmt, ...);
int fprintf(FILE *f, const char *fmt, ...);
ssize_t read(int fd, void *buf, size_t n);
char *fgets(char *s, int n, FILE *f);
char *strtok(char *s, const char *d);
size_t strlen(const char *s);
void exit(int code);
"""

# ---------------------------------------------------------------- return values / bounds checks
case("bounds_check_safe", "safe", "Added bounds check returns -1, which the old code already returned.",
PRE + """
int parse(const char *src, size_t len, char *out)
{
    char buf[64];
    if (!src)
        return -1;
    memcpy(buf, src, len);
    out[0] = buf[0];
    return 0;
}
""", PRE + """
int parse(const char *src, size_t len, char *out)
{
    char buf[64];
    if (!src)
        return -1;
    if (len > sizeof(buf))
        return -1;
    memcpy(buf, src, len);
    out[0] = buf[0];
    return 0;
}
""")

case("early_return_null_reused", "safe", "Early `return NULL` when the old version already returned NULL (0).",
PRE + """
struct node { int key; struct node *next; };
struct node *find(struct node *head, int key)
{
    for (; head; head = head->next)
        if (head->key == key)
            return head;
    return 0;
}
""", PRE + """
struct node { int key; struct node *next; };
#define NULL ((void *)0)
struct node *find(struct node *head, int key)
{
    if (key < 0)
        return NULL;
    for (; head; head = head->next)
        if (head->key == key)
            return head;
    return 0;
}
""")

case("new_error_code", "review", "A new return value (-2) callers have never seen.",
PRE + """
int check(int n)
{
    if (n < 0)
        return -1;
    return 0;
}
""", PRE + """
int check(int n)
{
    if (n < 0)
        return -1;
    if (n > 4096)
        return -2; //! check:new-return-value
    return 0;
}
""")

case("new_value_through_ret_variable", "review", "The new error code reaches `return ret` through the local ret.",
PRE + """
int handle(int fd, char *buf, size_t n)
{
    int ret = 0;
    if (fd < 0) {
        ret = -1;
        goto out;
    }
    buf[0] = 0;
out:
    return ret;
}
""", PRE + """
int handle(int fd, char *buf, size_t n)
{
    int ret = 0;
    if (fd < 0) {
        ret = -1;
        goto out;
    }
    if (n == 0) {
        ret = -7; //! handle:new-return-value
        goto out;
    }
    buf[0] = 0;
out:
    return ret;
}
""")

case("reused_value_through_ret_variable", "safe", "`ret = -1; goto out;` reuses a value the old code stored in ret.",
PRE + """
int handle(int fd, char *buf, size_t n)
{
    int ret = 0;
    if (fd < 0) {
        ret = -1;
        goto out;
    }
    buf[0] = 0;
out:
    return ret;
}
""", PRE + """
int handle(int fd, char *buf, size_t n)
{
    int ret = 0;
    if (fd < 0) {
        ret = -1;
        goto out;
    }
    if (n == 0) {
        ret = -1;
        goto out;
    }
    buf[0] = 0;
out:
    return ret;
}
""")

case("macro_constant_same_value", "safe", "-EINVAL (macro) and -22 fold to the same constant.",
PRE + """
#define EINVAL 22
int setopt(int v)
{
    if (v < 0)
        return -EINVAL;
    return 0;
}
""", PRE + """
#define EINVAL 22
int setopt(int v)
{
    if (v < 0)
        return -EINVAL;
    if (v > 100)
        return -22;
    return 0;
}
""")

case("enum_return_reused", "safe", "An enumerator the old version already returned.",
PRE + """
enum status { ST_OK, ST_BAD, ST_FULL };
enum status push(int *q, int n, int v)
{
    if (n >= 8)
        return ST_FULL;
    return ST_OK;
}
""", PRE + """
enum status { ST_OK, ST_BAD, ST_FULL };
enum status push(int *q, int n, int v)
{
    if (n < 0)
        return ST_FULL;
    if (n >= 8)
        return ST_FULL;
    return ST_OK;
}
""")

case("enum_return_new", "review", "ST_BAD was never returned before.",
PRE + """
enum status { ST_OK, ST_BAD, ST_FULL };
enum status push(int *q, int n, int v)
{
    if (n >= 8)
        return ST_FULL;
    return ST_OK;
}
""", PRE + """
enum status { ST_OK, ST_BAD, ST_FULL };
enum status push(int *q, int n, int v)
{
    if (v < 0)
        return ST_BAD; //! push:new-return-value
    if (n >= 8)
        return ST_FULL;
    return ST_OK;
}
""")

case("return_null_new", "review", "A lookup that never returned NULL now can.",
PRE + """
struct item { int id; };
struct item items[4];
struct item *get(int i)
{
    return &items[i & 3];
}
""", PRE + """
struct item { int id; };
struct item items[4];
struct item *get(int i)
{
    if (i < 0 || i > 3)
        return (struct item *)0; //! get:new-return-value
    return &items[i];
}
""")

case("ternary_return_values", "safe", "Both arms of the new ternary were old return values.",
PRE + """
int valid(int a, int b)
{
    if (a == b)
        return 0;
    return -1;
}
""", PRE + """
int valid(int a, int b)
{
    return a == b && a > 0 ? 0 : -1;
}
""")

case("heartbleed_style_length_check", "safe", "The shape of the CVE-2014-0160 fix: drop a record whose payload length lies.",
PRE + """
struct rec { unsigned char *data; unsigned int length; };
struct ssl { struct rec rrec; unsigned char *out; };
int process_heartbeat(struct ssl *s)
{
    unsigned char *p = s->rrec.data;
    unsigned int payload;
    unsigned char *bp = malloc(1 + 2 + 65535 + 16);
    if (bp == 0)
        return -1;
    payload = (p[1] << 8) | p[2];
    memcpy(bp + 3, p + 3, payload);
    free(bp);
    return 0;
}
""", PRE + """
struct rec { unsigned char *data; unsigned int length; };
struct ssl { struct rec rrec; unsigned char *out; };
int process_heartbeat(struct ssl *s)
{
    unsigned char *p = s->rrec.data;
    unsigned int payload;
    unsigned char *bp;
    if (1 + 2 + 16 > s->rrec.length)
        return 0;
    payload = (p[1] << 8) | p[2];
    if (1 + 2 + payload + 16 > s->rrec.length)
        return 0;
    bp = malloc(1 + 2 + 65535 + 16);
    if (bp == 0)
        return -1;
    memcpy(bp + 3, p + 3, payload);
    free(bp);
    return 0;
}
""")

# ---------------------------------------------------------------- direct writes
case("global_write_new", "review", "The patch starts counting in a global.",
PRE + """
int requests;
int serve(int fd)
{
    if (fd < 0)
        return -1;
    return 0;
}
""", PRE + """
int requests;
int serve(int fd)
{
    if (fd < 0)
        return -1;
    requests++; //! serve:write-global
    return 0;
}
""")

case("global_write_existing", "safe", "The old version already wrote `requests`; a second write site is not new.",
PRE + """
int requests;
int serve(int fd)
{
    if (fd < 0)
        return -1;
    requests++;
    return 0;
}
""", PRE + """
int requests;
int serve(int fd)
{
    if (fd < 0) {
        requests = requests + 1;
        return -1;
    }
    requests++;
    return 0;
}
""")

case("static_global_write", "review", "File-static state counts like a global.",
PRE + """
static int failures;
int login(const char *user)
{
    if (!user)
        return -1;
    return 0;
}
""", PRE + """
static int failures;
int login(const char *user)
{
    if (!user) {
        failures += 1; //! login:write-static
        return -1;
    }
    return 0;
}
""")

case("local_static_write", "review", "Function-local statics outlive the call.",
PRE + """
int next_id(void)
{
    static int last;
    return last + 1;
}
""", PRE + """
int next_id(void)
{
    static int last;
    last = last + 1; //! next_id:write-static
    return last; //! next_id:new-return-value
}
""")

case("out_param_write", "review", "Writing *len is an out-parameter the caller did not get before.",
PRE + """
int measure(const char *s, size_t *len)
{
    if (!s)
        return -1;
    return 0;
}
""", PRE + """
int measure(const char *s, size_t *len)
{
    if (!s)
        return -1;
    *len = strlen(s); //! measure:write-param
    return 0;
}
""")

case("param_field_write_new_field", "review", "Old wrote req->len; writing req->status is a different location.",
PRE + """
struct req { int len; int status; };
int finish(struct req *req, int n)
{
    req->len = n;
    return 0;
}
""", PRE + """
struct req { int len; int status; };
int finish(struct req *req, int n)
{
    req->len = n;
    if (n == 0)
        req->status = 1; //! finish:write-param
    return 0;
}
""")

case("param_by_value_struct_safe", "safe", "A struct passed by value is the callee's own copy.",
PRE + """
struct pt { int x; int y; };
int norm(struct pt p)
{
    return p.x + p.y;
}
""", PRE + """
struct pt { int x; int y; };
int norm(struct pt p)
{
    if (p.x < 0)
        p.x = -p.x;
    return p.x + p.y;
}
""")

case("array_param_write", "review", "An array parameter is a pointer to the caller's array.",
PRE + """
void fill(int a[], int n)
{
    (void)n;
}
""", PRE + """
void fill(int a[], int n)
{
    if (n > 0)
        a[0] = 1; //! fill:write-param
}
""")

case("global_pointer_deref", "review", "Writing through a global pointer reaches global state.",
PRE + """
struct cfg { int verbose; int port; };
struct cfg *g_cfg;
int set_port(int p)
{
    g_cfg->port = p;
    return 0;
}
""", PRE + """
struct cfg { int verbose; int port; };
struct cfg *g_cfg;
int set_port(int p)
{
    if (p > 65535)
        g_cfg->verbose = 1; //! set_port:write-global
    g_cfg->port = p;
    return 0;
}
""")

case("local_writes_only_safe", "safe", "Locals, local arrays, local structs and pointers to them are private to the frame.",
PRE + """
struct acc { int n; int sum; };
int total(const int *v, int n)
{
    struct acc a;
    a.n = 0;
    a.sum = 0;
    for (int i = 0; i < n; i++)
        a.sum += v[i];
    return a.sum;
}
""", PRE + """
struct acc { int n; int sum; };
int total(const int *v, int n)
{
    struct acc a;
    struct acc *pa = &a;
    int tmp[4];
    int *t = tmp;
    a.n = 0;
    a.sum = 0;
    for (int i = 0; i < n; i++) {
        pa->sum += v[i];
        pa->n++;
        t[i & 3] = v[i];
    }
    return a.sum;
}
""")

case("whole_object_then_field_changed_write", "review", "Old version overwrote *st entirely (zeros); storing -1 into st->b is a changed write, not a new location.",
PRE + """
struct stats { int a; int b; };
void reset(struct stats *st)
{
    struct stats zero = {0, 0};
    *st = zero;
}
""", PRE + """
struct stats { int a; int b; };
void reset(struct stats *st)
{
    struct stats zero = {0, 0};
    *st = zero;
    st->b = -1; //! reset:changed-write
}
""")

case("write_through_pointer_field_is_new", "review", "Old wrote the pointer field p->next; new writes the node it points to.",
PRE + """
struct node { int val; struct node *next; };
void unlink_next(struct node *p)
{
    p->next = p->next->next;
}
""", PRE + """
struct node { int val; struct node *next; };
void unlink_next(struct node *p)
{
    p->next->val = 0; //! unlink_next:write-param
    p->next = p->next->next;
}
""")

case("removed_write_safe", "safe", "Dropping a write cannot add behaviour the old code lacked.",
PRE + """
int hits;
int probe(int x)
{
    hits++;
    return x;
}
""", PRE + """
int hits;
int probe(int x)
{
    return x;
}
""")

# ---------------------------------------------------------------- aliasing through locals
case("alias_local_pointer_to_param", "review", "c aliases the parameter; writing c->state writes the caller's object.",
PRE + """
struct conn { int state; int fd; };
int close_conn(struct conn *conn)
{
    struct conn *c = conn;
    if (c->fd < 0)
        return -1;
    return 0;
}
""", PRE + """
struct conn { int state; int fd; };
int close_conn(struct conn *conn)
{
    struct conn *c = conn;
    if (c->fd < 0)
        return -1;
    c->state = 2; //! close_conn:write-param
    return 0;
}
""")

case("alias_pointer_arithmetic", "review", "p = buf + off still points into the caller's buffer.",
PRE + """
int terminate(char *buf, size_t off)
{
    if (off > 100)
        return -1;
    return 0;
}
""", PRE + """
int terminate(char *buf, size_t off)
{
    char *p;
    if (off > 100)
        return -1;
    p = buf + off;
    *p = 0; //! terminate:write-param
    return 0;
}
""")

case("alias_to_global_array", "review", "A local pointer to a global table; writes through it are global writes.",
PRE + """
int table[16];
int lookup(int i)
{
    int *p = &table[0];
    return p[i & 15];
}
""", PRE + """
int table[16];
int lookup(int i)
{
    int *p = &table[0];
    if (p[i & 15] < 0)
        p[i & 15] = 0; //! lookup:write-global
    return p[i & 15];
}
""")

case("alias_reassigned_in_branch", "review", "q may point to the local or to the parameter; the analysis keeps both.",
PRE + """
int pick(int *out, int flag)
{
    int tmp = 0;
    int *q = &tmp;
    *q = flag;
    return tmp;
}
""", PRE + """
int pick(int *out, int flag)
{
    int tmp = 0;
    int *q = &tmp;
    if (flag)
        q = out;
    *q = flag; //! pick:write-param
    return tmp;
}
""")

case("alias_same_location_safe", "safe", "Old wrote p->len directly; new writes it through an alias: same location.",
PRE + """
struct pkt { int len; char *data; };
void trim(struct pkt *p, int n)
{
    p->len = n;
}
""", PRE + """
struct pkt { int len; char *data; };
void trim(struct pkt *p, int n)
{
    struct pkt *q = p;
    if (n < 0)
        return;
    q->len = n;
}
""")

case("heap_write", "review", "Zeroing a new allocation writes heap memory the old version left alone.",
PRE + """
char *new_buf(size_t n)
{
    char *b = malloc(n + 1);
    return b;
}
""", PRE + """
char *new_buf(size_t n)
{
    char *b = malloc(n + 1);
    if (b)
        memset(b, 0, n + 1); //! new_buf:write-heap
    return b;
}
""")

case("leak_fix_free_existing_safe", "safe", "A leak fix on an error path: the old version already freed tmp on the normal path.",
PRE + """
int work(int n)
{
    char *tmp = malloc(16);
    if (!tmp)
        return -1;
    if (n < 0)
        return -1;
    free(tmp);
    return 0;
}
""", PRE + """
int work(int n)
{
    char *tmp = malloc(16);
    if (!tmp)
        return -1;
    if (n < 0) {
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}
""")

case("free_param_member", "review", "free() of a caller's member and clearing it: two new writes to the caller's object.",
PRE + """
struct sess { char *name; int id; };
void sess_reset(struct sess *s)
{
    s->id = 0;
}
""", PRE + """
struct sess { char *name; int id; };
void sess_reset(struct sess *s)
{
    free(s->name); //! sess_reset:write-param
    s->name = 0; //! sess_reset:write-param
    s->id = 0;
}
""")

case("call_result_pointer", "review", "A pointer returned by an unseen function may point anywhere.",
PRE + """
struct conn { int state; };
struct conn *lookup(int id);
int touch(int id)
{
    struct conn *c = lookup(id);
    if (!c)
        return -1;
    return 0;
}
""", PRE + """
struct conn { int state; };
struct conn *lookup(int id);
int touch(int id)
{
    struct conn *c = lookup(id);
    if (!c)
        return -1;
    c->state = 1; //! touch:write-pointer
    return 0;
}
""")

# ---------------------------------------------------------------- library calls
case("library_memcpy_out_param", "review", "memcpy writes through its first argument: the caller's buffer.",
PRE + """
int copy_name(char *dst, const char *src, size_t n)
{
    if (n > 32)
        return -1;
    return 0;
}
""", PRE + """
int copy_name(char *dst, const char *src, size_t n)
{
    if (n > 32)
        return -1;
    memcpy(dst, src, n); //! copy_name:write-param
    return 0;
}
""")

case("library_snprintf_global", "review", "snprintf into a global buffer.",
PRE + """
char last_error[128];
int fail(int code)
{
    return -1;
}
""", PRE + """
char last_error[128];
int fail(int code)
{
    snprintf(last_error, sizeof(last_error), "code %d", code); //! fail:write-global
    return -1;
}
""")

case("library_read_second_arg", "review", "read() writes through its second argument (the connection's buffer).",
PRE + """
struct conn { int fd; char buf[512]; int used; };
ssize_t refill(struct conn *c)
{
    if (c->used >= 512)
        return -1;
    return 0;
}
""", PRE + """
struct conn { int fd; char buf[512]; int used; };
ssize_t refill(struct conn *c)
{
    ssize_t n;
    if (c->used >= 512)
        return -1;
    n = read(c->fd, c->buf + c->used, 512 - c->used); //! refill:write-param refill:new-return-value
    return n;
}
""")

case("library_fgets_local_safe", "safe", "fgets into a local array writes only the frame.",
PRE + """
int first_char(FILE *fp)
{
    char line[80];
    line[0] = 0;
    return line[0];
}
""", PRE + """
int first_char(FILE *fp)
{
    char line[80];
    line[0] = 0;
    if (fp)
        fgets(line, sizeof(line), fp);
    return line[0];
}
""")

case("library_hidden_state", "review", "strtok keeps a static position inside libc.",
PRE + """
int count_words(char *s)
{
    return s[0] != 0;
}
""", PRE + """
int count_words(char *s)
{
    int n = 0;
    char *w = strtok(s, " "); //! count_words:write-global count_words:write-param
    while (w) {
        n++; //! count_words:new-return-value
        w = strtok(0, " ");
    }
    return n;
}
""")

case("stdio_logging_safe", "safe", "Logging to stderr on a new error path is not a state write.",
PRE + """
int open_db(const char *path)
{
    if (!path)
        return -1;
    return 0;
}
""", PRE + """
int open_db(const char *path)
{
    if (!path)
        return -1;
    if (strlen(path) > 255) {
        fprintf(stderr, "path too long: %s\\n", path);
        return -1;
    }
    return 0;
}
""")

# ---------------------------------------------------------------- interprocedural
case("helper_writes_global", "review", "The new call reaches a helper that bumps a global counter.",
PRE + """
int errors;
static void note_error(void) { errors++; }
int check_len(int n)
{
    if (n < 0)
        return -1;
    return 0;
}
""", PRE + """
int errors;
static void note_error(void) { errors++; }
int check_len(int n)
{
    if (n < 0)
        return -1;
    if (n > 1024) {
        note_error(); //! check_len:write-global
        return -1;
    }
    return 0;
}
""")

case("helper_writes_param_of_caller", "review", "The helper writes through its parameter; the caller passes its own parameter.",
PRE + """
struct buf { int len; char *data; };
static void clear(struct buf *b) { b->len = 0; }
int consume(struct buf *in, int n)
{
    if (n > in->len)
        return -1;
    return 0;
}
""", PRE + """
struct buf { int len; char *data; };
static void clear(struct buf *b) { b->len = 0; }
int consume(struct buf *in, int n)
{
    if (n > in->len) {
        clear(in); //! consume:write-param
        return -1;
    }
    return 0;
}
""")

case("helper_writes_local_arg_safe", "safe", "The helper writes through its parameter, but the caller hands it a local.",
PRE + """
struct buf { int len; char *data; };
static void clear(struct buf *b) { b->len = 0; }
int measure(const struct buf *in)
{
    struct buf tmp;
    tmp.len = in->len;
    return tmp.len;
}
""", PRE + """
struct buf { int len; char *data; };
static void clear(struct buf *b) { b->len = 0; }
int measure(const struct buf *in)
{
    struct buf tmp;
    tmp.len = in->len;
    if (tmp.len < 0)
        clear(&tmp);
    return tmp.len;
}
""")

case("helper_two_levels", "review", "f -> g -> h, and h writes a static.",
PRE + """
static int dropped;
static void h(void) { dropped = 1; }
static void g(int x) { if (x) h(); }
int f(int x)
{
    return x;
}
""", PRE + """
static int dropped;
static void h(void) { dropped = 1; }
static void g(int x) { if (x) h(); }
int f(int x)
{
    g(x); //! f:write-static
    return x;
}
""")

case("helper_recursive", "review", "A recursive helper that writes a global at some depth.",
PRE + """
int depth_max;
static int walk(int n) { if (n <= 0) { depth_max = 1; return 0; } return walk(n - 1) + 1; }
int measure_depth(int n)
{
    return n;
}
""", PRE + """
int depth_max;
static int walk(int n) { if (n <= 0) { depth_max = 1; return 0; } return walk(n - 1) + 1; }
int measure_depth(int n)
{
    return walk(n); //! measure_depth:write-global measure_depth:new-return-value
}
""")

case("helper_already_called_safe", "safe", "The old version already called the writing helper.",
PRE + """
int errors;
static void note_error(void) { errors++; }
int check_len(int n)
{
    if (n < 0) {
        note_error();
        return -1;
    }
    return 0;
}
""", PRE + """
int errors;
static void note_error(void) { errors++; }
int check_len(int n)
{
    if (n < 0 || n > 1024) {
        note_error();
        return -1;
    }
    return 0;
}
""")

case("helper_same_state_directly_safe", "safe", "Old wrote `errors` directly; new does it through a helper: same state.",
PRE + """
int errors;
static void note_error(void) { errors++; }
int check_len(int n)
{
    if (n < 0) {
        errors++;
        return -1;
    }
    return 0;
}
""", PRE + """
int errors;
static void note_error(void) { errors++; }
int check_len(int n)
{
    if (n < 0) {
        note_error();
        return -1;
    }
    return 0;
}
""")

case("added_helper_writes_global", "review", "The patch adds a helper (listed as added) and the changed caller inherits its write.",
PRE + """
int last_len;
int store(int n)
{
    return n;
}
""", PRE + """
int last_len;
static void remember(int n) { last_len = n; }
int store(int n)
{
    remember(n); //! store:write-global
    return n;
}
""")

case("unknown_external_call", "review", "A new call to a function outside the TU: effects unknown.",
PRE + """
void log_event(int code);
int submit(int x)
{
    if (x < 0)
        return -1;
    return 0;
}
""", PRE + """
void log_event(int code);
int submit(int x)
{
    if (x < 0) {
        log_event(x); //! submit:unknown-call
        return -1;
    }
    return 0;
}
""")

case("indirect_call", "review", "A new call through a function pointer.",
PRE + """
struct ops { void (*on_error)(int); };
int run(struct ops *o, int x)
{
    if (x < 0)
        return -1;
    return 0;
}
""", PRE + """
struct ops { void (*on_error)(int); };
int run(struct ops *o, int x)
{
    if (x < 0) {
        o->on_error(x); //! run:unknown-call
        return -1;
    }
    return 0;
}
""")

# ---------------------------------------------------------------- unsupported: signatures, types, globals
case("signature_param_added", "unsupported", "Callers pass two arguments; the new body expects three.",
PRE + """
int scale(int x, int k)
{
    return x * k;
}
""", PRE + """
int scale(int x, int k, int limit) //! scale:signature-changed
{
    if (x > limit)
        return limit; //! scale:new-return-value
    return x * k;
}
""")

case("return_type_changed", "unsupported", "int -> long: callers read the wrong register width.",
PRE + """
int total(int a, int b)
{
    return a + b;
}
""", PRE + """
long total(int a, int b) //! total:return-type-changed
{
    return (long)a + b; //! total:new-return-value
}
""")

case("linkage_changed", "unsupported", "A function that becomes static changes linkage.",
PRE + """
int area(int w, int h)
{
    return w * h;
}
""", PRE + """
static int area(int w, int h) //! area:signature-changed
{
    if (w < 0 || h < 0)
        return 0; //! area:new-return-value
    return w * h;
}
""")

case("param_renamed_safe", "safe", "Renaming a parameter is not a signature change.",
PRE + """
int twice(int x)
{
    return x + x;
}
""", PRE + """
int twice(int value)
{
    return value + value;
}
""")

case("struct_changed", "unsupported", "A field added to a struct used by code: live objects keep the old layout.",
PRE + """
struct user { int id; char name[16]; };
int user_id(struct user *u)
{
    return u->id;
}
""", PRE + """
struct user { int id; int flags; char name[16]; }; //! -:type-changed
int user_id(struct user *u)
{
    return u->id;
}
""")

case("struct_added_unused_safe", "safe", "A new struct nothing uses yet changes nothing.",
PRE + """
int one(void)
{
    return 1;
}
""", PRE + """
struct future { int a; };
int one(void)
{
    return 1;
}
""")

case("typedef_changed", "unsupported", "A typedef used by a function changed width.",
PRE + """
typedef int len_t;
len_t clamp(len_t n)
{
    return n < 0 ? 0 : n;
}
""", PRE + """
typedef long len_t; //! -:type-changed
len_t clamp(len_t n)
{
    return n < 0 ? 0 : n;
}
""")

case("enum_changed", "unsupported", "An enum gains a member: values used by the code may shift.",
PRE + """
enum color { RED, GREEN };
int is_red(enum color c)
{
    return c == RED;
}
""", PRE + """
enum color { RED, ORANGE, GREEN }; //! -:type-changed
int is_red(enum color c)
{
    return c == RED;
}
""")

case("nested_struct_changed", "unsupported", "struct inner changed; struct outer contains it and is used.",
PRE + """
struct inner { int a; };
struct outer { struct inner in; int b; };
int get_b(struct outer *o)
{
    return o->b;
}
""", PRE + """
struct inner { int a; int extra; }; //! -:type-changed
struct outer { struct inner in; int b; };
int get_b(struct outer *o)
{
    return o->b;
}
""")

case("global_initializer_changed", "unsupported", "Initialisers ran at load time.",
PRE + """
int max_conns = 64;
int can_accept(int n)
{
    return n < max_conns;
}
""", PRE + """
int max_conns = 32; //! -:global-changed
int can_accept(int n)
{
    return n < max_conns;
}
""")

case("global_added", "unsupported", "The live process has no storage for a new global.",
PRE + """
int serve(int fd)
{
    return fd;
}
""", PRE + """
int served; //! -:global-changed
int serve(int fd)
{
    served++; //! serve:write-global
    return fd;
}
""")

case("static_local_added", "unsupported", "A new function-local static needs storage the target lacks.",
PRE + """
int throttle(int n)
{
    return n > 10;
}
""", PRE + """
int throttle(int n)
{
    static int calls; //! throttle:static-local-changed
    calls++; //! throttle:write-static
    return n > 10;
}
""")

case("macro_changed_unchanged_function", "unsupported", "LIMIT changed; check() was not edited but compiles differently.",
PRE + """
#define LIMIT 16
int check(int n)
{
    return n < LIMIT;
}
int other(int n)
{
    return n;
}
""", PRE + """
#define LIMIT 8
int check(int n) //! check:macro-changed
{
    return n < LIMIT;
}
int other(int n)
{
    return n;
}
""")

case("macro_unused_change_safe", "safe", "A macro nobody expands changed: nothing compiles differently.",
PRE + """
#define UNUSED_LIMIT 16
int check(int n)
{
    return n < 4;
}
""", PRE + """
#define UNUSED_LIMIT 8
int check(int n)
{
    return n < 4;
}
""")

case("inline_function_changed", "unsupported", "Callers carry inlined copies of an inline function.",
PRE + """
static inline int clampi(int v) { return v < 0 ? 0 : v; }
int use(int v) { return clampi(v); }
""", PRE + """
static inline int clampi(int v) { return v < 0 ? 0 : v > 255 ? 255 : v; } //! clampi:inline-changed clampi:new-return-value
int use(int v) { return clampi(v); }
""")

case("plain_inline_changed", "unsupported", "`inline` without static is inlined just the same.",
PRE + """
inline int sq(int v) { return v * v; }
""", PRE + """
inline int sq(int v) { if (v > 46340) return 0; return v * v; } //! sq:inline-changed sq:new-return-value
""")

# ---------------------------------------------------------------- unsupported: always on a stack
case("main_changed", "unsupported", "main is on the stack for the life of the process.",
PRE + """
int main(int argc, char **argv)
{
    return argc > 1;
}
""", PRE + """
int main(int argc, char **argv) //! main:main-function
{
    if (argc > 8)
        return 1;
    return argc > 1;
}
""")

case("thread_start_routine", "unsupported", "worker is passed to pthread_create: the bottom frame of live threads.",
PRE + """
typedef unsigned long pthread_t;
int pthread_create(pthread_t *t, const void *attr, void *(*fn)(void *), void *arg);
static void *worker(void *arg)
{
    int *n = arg;
    return (void *)0;
}
int start(pthread_t *t, int *n)
{
    return pthread_create(t, 0, worker, n);
}
""", PRE + """
typedef unsigned long pthread_t;
int pthread_create(pthread_t *t, const void *attr, void *(*fn)(void *), void *arg);
static void *worker(void *arg) //! worker:thread-start-routine
{
    int *n = arg;
    if (!n)
        return (void *)0;
    return (void *)0;
}
int start(pthread_t *t, int *n)
{
    return pthread_create(t, 0, worker, n);
}
""")

case("noreturn_attribute", "unsupported", "A GNU noreturn attribute (erased by the shim) still marks the function.",
PRE + """
void die(const char *msg) __attribute__((noreturn));
void die(const char *msg)
{
    fprintf(stderr, "%s\\n", msg);
    exit(1);
}
""", PRE + """
void die(const char *msg) __attribute__((noreturn));
void die(const char *msg) //! die:never-returns
{
    fprintf(stderr, "fatal: %s\\n", msg);
    exit(2);
}
""")

case("noreturn_keyword", "unsupported", "C11 _Noreturn.",
PRE + """
_Noreturn void bail(int code)
{
    exit(code);
}
""", PRE + """
_Noreturn void bail(int code) //! bail:never-returns
{
    exit(code + 1);
}
""")

case("exit_at_end_never_returns", "unsupported", "No return statement and the body ends in exit(): never returns.",
PRE + """
void usage(const char *prog)
{
    fprintf(stderr, "usage: %s\\n", prog);
    exit(64);
}
""", PRE + """
void usage(const char *prog) //! usage:never-returns
{
    fprintf(stderr, "usage: %s [-v]\\n", prog);
    exit(64);
}
""")

case("event_loop_never_returns", "unsupported", "An endless event loop is always on the stack.",
PRE + """
int poll_once(int fd);
void event_loop(int fd)
{
    for (;;) {
        if (poll_once(fd) < 0)
            continue;
    }
}
""", PRE + """
int poll_once(int fd);
void event_loop(int fd) //! event_loop:never-returns
{
    for (;;) {
        if (poll_once(fd) < 0)
            continue;
        if (fd < 0)
            continue;
    }
}
""")

case("loop_with_break_safe", "safe", "while (1) with a break falls out: the function returns.",
PRE + """
int spin(int *flag)
{
    while (1) {
        if (*flag)
            break;
    }
    return 0;
}
""", PRE + """
int spin(int *flag)
{
    int n = 0;
    while (1) {
        if (*flag || n > 1000)
            break;
        n++;
    }
    return 0;
}
""")

# ---------------------------------------------------------------- bookkeeping
case("comment_only_change", "safe", "Comments and whitespace do not change the AST.",
PRE + """
int id(int x)
{
    return x;
}
""", PRE + """
/* identity */
int id(int x)
{
    /* nothing to see */
    return   x;
}
""")

case("added_pure_helper_safe", "safe", "A new helper without side effects, called from a bounds check.",
PRE + """
int get(const int *v, int n, int i)
{
    if (i < 0)
        return -1;
    return v[i];
}
""", PRE + """
static int in_range(int i, int n) { return i >= 0 && i < n; }
int get(const int *v, int n, int i)
{
    if (!in_range(i, n))
        return -1;
    return v[i];
}
""")

case("errno_reused_safe", "safe", "Real <errno.h>: errno (a macro over __errno_location()) was already set by the old code.",
"""
#include <errno.h>
#include <string.h>
int parse_port(const char *s, int *port)
{
    if (!s) {
        errno = EINVAL;
        return -1;
    }
    *port = (int)strlen(s);
    return 0;
}
""", """
#include <errno.h>
#include <string.h>
int parse_port(const char *s, int *port)
{
    if (!s || strlen(s) > 5) {
        errno = EINVAL;
        return -1;
    }
    *port = (int)strlen(s);
    return 0;
}
""")

case("errno_new_write", "review", "Real <errno.h>: setting errno where the old code never did is a new global write.",
"""
#include <errno.h>
#include <ctype.h>
int digit(int c)
{
    if (!isdigit(c))
        return -1;
    return c - '0';
}
""", """
#include <errno.h>
#include <ctype.h>
int digit(int c)
{
    if (!isdigit(c)) {
        errno = ERANGE; //! digit:write-global
        return -1;
    }
    return c - '0';
}
""")


case("kr_helper_param_write", "review", "A K&R-style helper (identifier list) writes through its parameter; mapped onto the caller's argument.",
PRE + """
struct cov { int num; int max; };
static int cov_add(c, v)
    struct cov *c;
    int v;
{
    c->num = v;
    return 0;
}
int track(struct cov *cv, int v)
{
    return v;
}
""", PRE + """
struct cov { int num; int max; };
static int cov_add(c, v)
    struct cov *c;
    int v;
{
    c->num = v;
    return 0;
}
int track(struct cov *cv, int v)
{
    cov_add(cv, v); //! track:write-param
    return v;
}
""")

case("ifdef_unbalanced_braces_changed", "review", "Braces opened differently in #if branches: the edit is still seen as an edit, not a macro change.",
PRE + """
int flags;
int scan(int n)
{
#ifdef WIDE
    if (n > 1) {
#else
    if (n > 0) {
#endif
        n--;
    }
    return n;
}
""", PRE + """
int flags;
int scan(int n)
{
#ifdef WIDE
    if (n > 1) {
#else
    if (n > 0) {
#endif
        n--;
    }
    flags = n; //! scan:write-global
    return n;
}
""")

case("new_const_message_safe", "safe", "A new read-only message table is data of the patch, like a string literal.",
PRE + """
int check_hdr(const char *h, size_t n)
{
    if (n < 4)
        return -1;
    return 0;
}
""", PRE + """
static const char TooShort[] = "header too short";
static const char *const Msgs[] = { TooShort };
int check_hdr(const char *h, size_t n)
{
    if (n < 4 || h[0] != 'P') {
        fprintf(stderr, "%s\\n", Msgs[0]);
        return -1;
    }
    return 0;
}
""")


case("changed_write_value", "review", "Same location, new value: the length the caller sees changes.",
PRE + """
struct pkt { int len; char *data; };
void set_len(struct pkt *p, int n)
{
    p->len = n;
}
""", PRE + """
struct pkt { int len; char *data; };
void set_len(struct pkt *p, int n)
{
    p->len = n - 1; //! set_len:changed-write
}
""")

case("same_write_guarded_safe", "safe", "The same store, now under a new condition, with a parameter renamed.",
PRE + """
int limit;
void set_limit(int v)
{
    limit = v;
}
""", PRE + """
int limit;
void set_limit(int value)
{
    if (value < 0)
        return;
    limit = value;
}
""")


case("thread_start_via_wrapper", "unsupported", "spawn() passes its parameter on to pthread_create: poller is a start routine too.",
PRE + """
typedef unsigned long pthread_t;
int pthread_create(pthread_t *t, const void *attr, void *(*fn)(void *), void *arg);
static int spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    return pthread_create(&t, 0, fn, arg);
}
static void *poller(void *arg)
{
    return arg;
}
int start(void)
{
    return spawn(poller, 0);
}
""", PRE + """
typedef unsigned long pthread_t;
int pthread_create(pthread_t *t, const void *attr, void *(*fn)(void *), void *arg);
static int spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    return pthread_create(&t, 0, fn, arg);
}
static void *poller(void *arg) //! poller:thread-start-routine
{
    if (!arg)
        return arg;
    return arg;
}
int start(void)
{
    return spawn(poller, 0);
}
""")


case("list_walk_one_finding", "review", "p = p->next in a loop: the store may reach any node; one finding names them.",
PRE + """
struct node { int val; struct node *next; };
void last(struct node *p)
{
    while (p->next)
        p = p->next;
}
""", PRE + """
struct node { int val; struct node *next; };
void last(struct node *p)
{
    while (p->next)
        p = p->next;
    p->val = 0; //! last:write-param
}
""")

case("struct_and_function_share_a_line", "review", "A struct and the function on one line: the function's own text is compared, not the struct's.",
PRE + """
struct st { int count; } g_state; void bump(void) { }
""", PRE + """
struct st { int count; } g_state; void bump(void) { struct st *p = &g_state; p->count++; } //! bump:write-global
""")


case("helper_returns_pointer_into_param", "review", "find() returns a pointer into its parameter; the caller's write through it lands in the caller's table.",
PRE + """
struct item { int id; int hits; };
struct table { struct item items[8]; };
static struct item *find(struct table *t, int id) { return &t->items[id & 7]; }
int touch(struct table *t, int id)
{
    struct item *it = find(t, id);
    return it->id;
}
""", PRE + """
struct item { int id; int hits; };
struct table { struct item items[8]; };
static struct item *find(struct table *t, int id) { return &t->items[id & 7]; }
int touch(struct table *t, int id)
{
    struct item *it = find(t, id);
    it->hits++; //! touch:write-param
    return it->id;
}
""")

case("helper_returns_pointer_into_local_safe", "safe", "The same helper handed a local table: the write stays in the frame.",
PRE + """
struct item { int id; int hits; };
struct table { struct item items[8]; };
static struct item *find(struct table *t, int id) { return &t->items[id & 7]; }
int probe(int id)
{
    struct table tmp;
    struct item *it = find(&tmp, id);
    it->id = id;
    return it->id;
}
""", PRE + """
struct item { int id; int hits; };
struct table { struct item items[8]; };
static struct item *find(struct table *t, int id) { return &t->items[id & 7]; }
int probe(int id)
{
    struct table tmp;
    struct item *it = find(&tmp, id);
    it->id = id;
    it->hits = 0;
    return it->id;
}
""")


case("chained_assignment_same_values_safe", "safe", "a = b = v stores v in both, as the old separate stores did.",
PRE + """
struct hdr { long csize; long usize; };
struct hdr g_local, g_central;
void set_sizes(long v)
{
    g_local.csize = v;
    g_central.csize = v;
}
""", PRE + """
struct hdr { long csize; long usize; };
struct hdr g_local, g_central;
void set_sizes(long v)
{
    if (v < 0)
        return;
    g_central.csize = g_local.csize = v;
}
""")


case("clamp_before_store_changed_write", "review", "A clamp added before an existing store: the location is old, what it can hold is new.",
PRE + """
struct pkt { int len; char *data; };
void set_len(struct pkt *p, int n)
{
    p->len = n;
}
""", PRE + """
struct pkt { int len; char *data; };
void set_len(struct pkt *p, int n)
{
    if (n > 1500)
        n = 1500;
    p->len = n; //! set_len:changed-write
}
""")


case("assert_line_shift_not_a_macro_change", "safe", "Real <assert.h>: a function below the edit moved; its assert's __LINE__ changed, nothing else.",
"""
#include <assert.h>
int first(int x)
{
    return x;
}
int second(int *p)
{
    assert(p != 0);
    return *p;
}
""", """
#include <assert.h>
int first(int x)
{
    if (x < 0)
        return x;
    return x;
}
int second(int *p)
{
    assert(p != 0);
    return *p;
}
""")


case("const_local_table_changed_safe", "safe", "A function-local const table only this function sees: the patch carries its own copy.",
PRE + """
const char *level_name(int l)
{
    static const char *const names[] = { "debug", "info" };
    if (l < 0 || l > 1)
        return names[0];
    return names[l];
}
""", PRE + """
const char *level_name(int l)
{
    static const char *const names[] = { "debug", "info", "warn" };
    if (l < 0 || l > 2)
        return names[0];
    return names[l];
}
""")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (name, verdict, note, old, new) in enumerate(CASES, 1):
        d = OUT / f"{i:02d}_{name}"
        d.mkdir(exist_ok=True)
        (d / "old.c").write_text(old)
        (d / "new.c").write_text(new)
        findings = []
        for ln, line in enumerate(new.splitlines(), 1):
            m = re.search(r"//! (.*)$", line)
            if m:
                for tok in m.group(1).split():
                    fn, kind = tok.split(":")
                    findings.append({"function": None if fn == "-" else fn, "kind": kind, "line": ln})
        (d / "expect.json").write_text(json.dumps(
            {"verdict": verdict, "why": note, "findings": findings}, indent=2) + "\n")
    print(len(CASES), "cases")

if __name__ == "__main__":
    main()
