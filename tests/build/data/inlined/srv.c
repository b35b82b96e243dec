/* Changed functions gcc -O2 did not keep as one out-of-line copy (tests/build/test_reach.py):
 * check() is inlined into handle_a() and handle_b() and has no symbol; scale() exists only as
 * scale.constprop.0 (factor is always 3), which use_scale() and use_scale2() call; banner() is
 * inlined into main(). Prints the four results every 20 ms. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int limit = 64;

static int check(int len)
{
    if (len > limit)
        return -1;
    return len * 2;
}

int __attribute__((noinline)) handle_a(int x) { return check(x) + 1; }
int __attribute__((noinline)) handle_b(int x) { return check(x + 1) - 1; }

static int __attribute__((noinline)) scale(int x, int factor)
{
    int r = 0;
    for (int i = 0; i < x % 7; i++)
        r += factor * i + (x >> i);
    return r;
}

int __attribute__((noinline)) use_scale(int x) { return scale(x, 3) + 1; }
int __attribute__((noinline)) use_scale2(int y) { return scale(y + 2, 3) - 1; }

static int banner(int n)
{
    return printf("inlined n=%d\n", n);
}

/* volatile: gcc finds use_scale() const and would hoist its calls out of the loop */
volatile int n;

int main(int argc, char **argv)
{
    n = argc > 1 ? atoi(argv[1]) : 64;
    banner(n);
    for (;;) {
        printf("%d %d %d %d\n", handle_a(n), handle_b(n), use_scale(n), use_scale2(n));
        fflush(stdout);
        usleep(20000);
    }
}
