#define _GNU_SOURCE
/* While the patch is applied, the main thread holds a malloc arena lock (malloc_info writing
 * into a full pipe) and another thread holds the dynamic loader's lock (dlopen of a library
 * whose constructor waits). A patcher that calls malloc or dlopen in the target deadlocks here. */
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int pipefd[2];

static volatile int base_generation = 1;

__attribute__((noinline)) int generation(void) { return base_generation; }

static void *loader_thread(void *arg)
{
    void *h = dlopen((const char *)arg, RTLD_NOW);
    printf("dlopen %s generation=%d\n", h ? "ok" : dlerror(), generation());
    fflush(stdout);
    return NULL;
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        printf("worker generation=%d\n", generation());
        fflush(stdout);
        usleep(20000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    for (int i = 0; i < 64; i++)
        free(malloc(100 + i)); /* give the arena something to describe */
    pipe(pipefd);
    fcntl(pipefd[1], F_SETPIPE_SZ, 4096);
    static char fill[4096];
    memset(fill, ' ', sizeof fill);
    write(pipefd[1], fill, sizeof fill); /* full: malloc_info's first write will block */
    pthread_t l, w;
    pthread_create(&w, NULL, worker, NULL);
    pthread_create(&l, NULL, loader_thread, argv[1]);
    printf("ready %d\n", getpid());
    fflush(stdout);
    /* The test drains the pipe (stdin tells us its path) once the patch is applied. */
    FILE *f = fdopen(pipefd[1], "w");
    setvbuf(f, NULL, _IONBF, 0);
    printf("holding malloc lock pipe=%d\n", pipefd[0]);
    fflush(stdout);
    malloc_info(0, f); /* blocks inside malloc_info, arena mutex held, until the pipe drains */
    fclose(f);
    printf("malloc lock released generation=%d\n", generation());
    fflush(stdout);
    pthread_join(l, NULL);
    for (;;) {
        printf("main generation=%d\n", generation());
        fflush(stdout);
        usleep(20000);
    }
}
