/* A fix that changes two functions that must switch together: price() and its caller-visible
 * twin tax() agree on a version; a call pair that mixes versions is counted as torn. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static unsigned long pairs, torn;

__attribute__((noinline)) int price(int x)
{
    pairs++;
    return x * 10 + 1;
}

__attribute__((noinline)) int tax(int x)
{
    return x * 10 + 1;
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0;; i++) {
        int a = price(i) - i * 10, b = tax(i) - i * 10;
        if (a != b)
            __atomic_add_fetch(&torn, 1, __ATOMIC_RELAXED);
        usleep(100);
    }
    return NULL;
}

int main(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        printf("version=%d torn=%lu pairs=%lu\n", price(0), torn, pairs);
        fflush(stdout);
        usleep(20000);
    }
}
