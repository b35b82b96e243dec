/* tiny() compiles to 3 bytes (xor eax,eax; ret): too short for a 5-byte jump. */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) int tiny(void) { return 0; }

int main(void)
{
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        printf("tiny=%d\n", tiny());
        fflush(stdout);
        usleep(10000);
    }
}
