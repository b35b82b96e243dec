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
