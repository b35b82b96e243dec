/* The patched function calls glibc string functions that are IFUNCs (strchr, strlen, memcpy):
 * their symbol is a resolver, and the loader must bind the implementation this CPU uses. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) int parse(const char *line, char *out, size_t cap)
{
    const char *sp = strchr(line, ' ');
    if (!sp)
        return -1;
    size_t n = strlen(sp + 1);
    if (n >= cap)
        return -1;
    memcpy(out, sp + 1, n + 1);
    return (int)n;
}

int main(void)
{
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        char out[64];
        int n = parse("KEY value-text", out, sizeof out);
        printf("n=%d out=%s\n", n, n >= 0 ? out : "");
        fflush(stdout);
        usleep(10000);
    }
}
