/* Threads blocked in read() and nanosleep() while the patch is applied must carry on exactly:
 * read returns the bytes sent later, the sleep lasts as long as asked, no EINTR leaks out. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) int version(void) { return 1; }

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *reader(void *arg)
{
    (void)arg;
    char buf[64];
    ssize_t n = read(0, buf, sizeof buf - 1);
    int e = errno;
    if (n > 0) {
        buf[n] = 0;
        buf[strcspn(buf, "\n")] = 0;
    }
    printf("read n=%zd errno=%d data=%s version=%d\n", n, n < 0 ? e : 0, n > 0 ? buf : "", version());
    fflush(stdout);
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    struct timespec ts = {6, 0}; /* long enough for the apply to land in the middle of it */
    double t0 = now();
    int r = nanosleep(&ts, NULL);
    int e = errno;
    printf("sleep r=%d errno=%d slept=%.3f version=%d\n", r, r ? e : 0, now() - t0, version());
    fflush(stdout);
    return NULL;
}

int main(void)
{
    pthread_t a, b;
    pthread_create(&a, NULL, reader, NULL);
    pthread_create(&b, NULL, sleeper, NULL);
    printf("ready %d\n", getpid());
    fflush(stdout);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("done version=%d\n", version());
    fflush(stdout);
    return 0;
}
