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

static const char TooShort[] = "header too short";
static const char *const Msgs[] = { TooShort };
int check_hdr(const char *h, size_t n)
{
    if (n < 4 || h[0] != 'P') {
        fprintf(stderr, "%s\n", Msgs[0]);
        return -1;
    }
    return 0;
}
