/* A signal handler calls the patched function (SIGALRM every 2 ms) while main calls it too. */
#include <signal.h>
#include <stdio.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t in_handler_old, in_handler_new, in_handler_bad;

static volatile int scale = 10;

__attribute__((noinline)) int rate(int x) { return x * scale; }

static void on_alarm(int sig)
{
    (void)sig;
    int v = rate(7);
    if (v == 70)
        in_handler_old++;
    else if (v == 700)
        in_handler_new++;
    else
        in_handler_bad++;
}

int main(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 2000}, {0, 2000}};
    setitimer(ITIMER_REAL, &it, NULL);
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        printf("main=%d handler_old=%d handler_new=%d handler_bad=%d\n", rate(3), in_handler_old,
               in_handler_new, in_handler_bad);
        fflush(stdout);
        usleep(20000);
    }
}
