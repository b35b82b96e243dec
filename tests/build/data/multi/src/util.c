/* Second TU: a static with the same name as one in main.c, a global other TUs use. */
#include <stdio.h>
#include "util.h"

static int count;
int total;

static int __attribute__((noinline)) scale(int v)
{
    if (v < 0)
        fprintf(stderr, "negative %d\n", v);
    return v * SCALE;
}

int __attribute__((noinline)) bump(int n)
{
    count++;
    total += scale(n);
    return total;
}

int __attribute__((noinline)) util_count(void)
{
    return count;
}
