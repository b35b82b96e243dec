/* A service-like loop for the observability tests: calls price() 100 times a second and
 * prints what it returned, so a test can see the patched code running. */
#include <stdio.h>
#include <unistd.h>

static unsigned long calls;

__attribute__((noinline)) int price(int units)
{
    calls += 1;
    return units * 10;
}

int main(void)
{
    for (int i = 0;; i++) {
        int v = price(1);
        if (i % 10 == 0) {
            printf("price=%d calls=%lu\n", v, calls);
            fflush(stdout);
        }
        usleep(10000);
    }
}
