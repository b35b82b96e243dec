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

const char *level_name(int l)
{
    static const char *const names[] = { "debug", "info" };
    if (l < 0 || l > 1)
        return names[0];
    return names[l];
}
