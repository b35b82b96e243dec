/* Every thread calls mix() as fast as it can while a patch switches it. Each result must be the
 * whole checksum of its input, from the old code (version 1) or the new (version 2): a call that
 * ran part old, part new code, or landed inside half-written entry bytes, breaks the checksum or
 * the process. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NTHREADS 8
static unsigned long n_old, n_new, bad;

__attribute__((noinline)) unsigned long mix(unsigned long x, int *version)
{
    unsigned long h = 1469598103934665603UL;
    for (int i = 0; i < 8; i++) {
        h ^= (x >> (i * 8)) & 0xff;
        h *= 1099511628211UL;
    }
    *version = 1;
    return h;
}

/* the reference: the same checksum, in a function no patch touches */
__attribute__((noinline)) static unsigned long reference(unsigned long x)
{
    unsigned long h = 1469598103934665603UL;
    for (int i = 0; i < 8; i++) {
        h ^= (x >> (i * 8)) & 0xff;
        h *= 1099511628211UL;
    }
    return h;
}

static void *worker(void *arg)
{
    if (getenv("BLOCK_SIGNALS")) { /* a worker that leaves every signal to main */
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
    }
    for (unsigned long x = (unsigned long)arg << 40;; x++) {
        int version = 0;
        unsigned long r = mix(x, &version);
        if (r != reference(x) || (version != 1 && version != 2))
            __atomic_add_fetch(&bad, 1, __ATOMIC_RELAXED);
        else if (version == 1)
            __atomic_add_fetch(&n_old, 1, __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&n_new, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(void)
{
    pthread_t t[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        unsigned long o = __atomic_exchange_n(&n_old, 0, __ATOMIC_RELAXED);
        unsigned long n = __atomic_exchange_n(&n_new, 0, __ATOMIC_RELAXED);
        printf("old=%lu new=%lu bad=%lu\n", o, n, __atomic_load_n(&bad, __ATOMIC_RELAXED));
        fflush(stdout);
        usleep(50000);
    }
}
