/* One thread calling a patched function; unpatched code reads the static counter it updates. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static unsigned long counter;

__attribute__((noinline)) int compute(int x)
{
    counter += 1;
    if (x < 0)
        return -1;
    return x + 1;
}

int main(int argc, char **argv)
{
    int period_us = argc > 1 ? atoi(argv[1]) : 2000;
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (int i = 0;; i++) {
        int v = compute(i) - i;
        printf("v=%d counter=%lu\n", v, counter);
        fflush(stdout);
        usleep(period_us);
    }
}
