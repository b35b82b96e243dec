/* A global the patched function updates; built with -fvisibility=hidden it becomes a LOCAL
 * symbol after linking and must still be found as the program's global. */
#include <stdio.h>
#include <unistd.h>

unsigned long total;

__attribute__((noinline)) int add(int x)
{
    total += (unsigned long)x;
    return 1;
}

int main(void)
{
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        int r = add(1);
        printf("r=%d total=%lu\n", r, total);
        fflush(stdout);
        usleep(10000);
    }
}
