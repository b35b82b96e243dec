/* 16 threads call the patched function and malloc in a loop; any other result is a failure. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NTHREADS 16
static unsigned long calls_old, calls_new, bad;

__attribute__((noinline)) int transform(int x)
{
    if (x < 0)
        return -1;
    return x * 2;
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 1;; i++) {
        char *q = malloc(64 + (i & 255));
        memset(q, i, 64);
        int x = (i & 0xff) + 1;
        int v = transform(q[0] & 0xff) == -1 ? -1 : transform(x);
        free(q);
        if (v == x * 2)
            __atomic_add_fetch(&calls_old, 1, __ATOMIC_RELAXED);
        else if (v == x * 3)
            __atomic_add_fetch(&calls_new, 1, __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&bad, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(void)
{
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        unsigned long o = __atomic_exchange_n(&calls_old, 0, __ATOMIC_RELAXED);
        unsigned long n = __atomic_exchange_n(&calls_new, 0, __ATOMIC_RELAXED);
        printf("old=%lu new=%lu bad=%lu\n", o, n, bad);
        fflush(stdout);
        usleep(50000);
    }
}
