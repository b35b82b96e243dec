/* Changed functions gcc -O2 did not keep as one out-of-line copy (tests/build/test_reach.py):
 * check() is inlined into handle_a() and handle_b() and has no symbol; scale() exists only as
 * scale.constprop.0 (factor is always 3), which use_scale() and use_scale2() call; lookup() is
 * split by partial inlining: its early return is inlined into find_a() and find_b(), which
 * call the rest, lookup.part.0; banner() is inlined into main(). Prints the results every
 * 20 ms. */
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

static char lbuf[64];

static int lookup(const char *s)
{
    if (s[0] == 0)
        return 0;
    int h = 0;
    for (int i = 0; s[i]; i++) {
        h = h * 31 + s[i];
        if (h % 17 == 3)
            h ^= 0x5555;
        if (h % 13 == 1)
            h += i * 7;
        lbuf[i & 63] = (char)h;
        if (h % 11 == 5)
            snprintf(lbuf, sizeof lbuf, "%d %s", h, s);
    }
    return h;
}

int __attribute__((noinline)) find_a(const char *s) { return lookup(s) + 1; }
int __attribute__((noinline)) find_b(const char *s) { return lookup(s) - 1; }

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
        printf("%d %d %d %d %d %d\n", handle_a(n), handle_b(n), use_scale(n), use_scale2(n),
               find_a("live-patch"), find_b("opus"));
        fflush(stdout);
        usleep(20000);
    }
}
