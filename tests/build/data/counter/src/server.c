/* Test target for the patch builder: a global counter, a file-static counter, a static
 * array, a static struct, a function-local static, a TLS variable, a static helper
 * (kept out of line), a static helper the compiler inlines, a static inline, libc calls. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include "server.h"

struct stats {
    int counter;
    int hits;
};

int counter = 0;
static int scount = 1;
static char last[64];
static struct stats st;
__thread int depth;

static int __attribute__((noinline)) helper(int x)
{
    scount += x;
    return scount;
}

static int twice(int x)
{
    return 2 * x;
}

static inline int clamp(int v)
{
    return v > LIMIT ? LIMIT : v;
}

int __attribute__((noinline)) handle(const char *req)
{
    static int calls;
    calls++;
    st.hits++;
    counter += helper((int)strlen(req));
    strncpy(last, req, sizeof(last) - 1);
    return calls;
}

int __attribute__((noinline)) report(void)
{
    depth++;
    printf("counter=%d scount=%d last=%s hits=%d twice=%d\n", counter, scount, last, st.hits,
           twice(counter));
    return clamp(counter);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        handle(argv[i]);
    return report() > LIMIT;
}
