/* First TU: its own static count, calls into util.c through a global function. */
#include <stdio.h>
#include "util.h"

static int count;

int __attribute__((noinline)) step(int i)
{
    count += i;
    if (i < 0)
        puts("negative");
    return bump(i);
}

int main(int argc, char **argv)
{
    (void)argv;
    for (int i = 1; i <= argc; i++)
        step(i);
    printf("main.count=%d util.count=%d total=%d\n", count, util_count(), total);
    return 0;
}
