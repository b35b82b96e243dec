/* serve_forever() loops until told to stop, which never happens here: it is always on a stack,
 * so no patch of it can ever find a quiescent moment. */
#include <stdio.h>
#include <unistd.h>

static volatile unsigned long ticks;
static volatile int stopping;

__attribute__((noinline)) int step(int x) { return x + 1; }

__attribute__((noinline)) void serve_forever(void)
{
    for (int i = 0; !stopping; i++) {
        ticks += (unsigned long)step(i) - (unsigned long)i;
        if (i % 50 == 0) {
            printf("tick %lu\n", ticks);
            fflush(stdout);
        }
        usleep(1000);
    }
}

int main(void)
{
    printf("ready %d\n", getpid());
    fflush(stdout);
    serve_forever();
}
