/* Test target: a global counter, a file-static counter, a function-local static,
 * a static helper, libc calls. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include "server.h"

int counter = 0;
static int scount = 1;
static char last[64];

static int __attribute__((noinline)) helper(int x)
{
    scount += x;
    return scount;
}

int __attribute__((noinline)) handle(const char *req)
{
    static int calls;
    calls++;
    counter += helper((int)strlen(req));
    strncpy(last, req, sizeof(last) - 1);
    return calls;
}

int __attribute__((noinline)) report(void)
{
    fprintf(stderr, "counter=%d scount=%d last=%s\n", counter, scount, last);
    return counter;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        handle(argv[i]);
    return report() > LIMIT;
}
