/* A recursive function patched while deep recursions run: results must stay whole-old or
 * whole-new per call tree (the stack check never lets a frame of the old version survive). */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) unsigned long walk(int depth, unsigned long acc)
{
    if (depth == 0)
        return acc;
    usleep(depth % 97 == 0 ? 100 : 0);
    return walk(depth - 1, acc + 1) + 0;
}

int main(void)
{
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        unsigned long r = walk(2000, 0);
        printf("walk=%lu\n", r);
        fflush(stdout);
        usleep(3000);
    }
}
