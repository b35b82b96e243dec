/* Forks a child every 50 ms; each child reports what the (possibly patched) function returns. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) int answer(void) { return 41; }

int main(void)
{
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        pid_t c = fork();
        if (c == 0) {
            printf("child %d answer=%d\n", getpid(), answer());
            fflush(stdout);
            _exit(0);
        }
        int st;
        waitpid(c, &st, 0);
        printf("parent answer=%d child_status=%d\n", answer(), st);
        fflush(stdout);
        usleep(50000);
    }
}
