/*
 * Bench target: T worker threads calling work() (bench/work_fix.diff patches work()).
 *
 *   target spin    <threads>                   call work() in a tight loop
 *   target paced   <threads> [sleep_us]         call work(), then sleep (default 1000 µs)
 *   target percall <threads> [calls] [gap_ms]   time batches of calls of work() and print
 *                                               {"thread":i,"batch":k,"calls":n,"ns_per_call":x,
 *                                                "result":r} per batch (default 1000000, 100 ms)
 *
 * Prints "pid <pid> threads <T> mode <mode>", then "ready" once every worker has called work().
 * The main thread then serves stdin, one command a line, and sleeps in read() in between:
 *   probe <x>   -> "probe <x> <work(x)>"   (tells whether the patched work() is live)
 *   calls       -> "calls <n>"             (calls of work() so far, all threads)
 *   quit / EOF  -> exits 0
 * Give it a pipe on stdin that the bench holds: when the bench dies, the target exits too.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 1024

/* The last input work() saw: target state the patched work() keeps using. */
unsigned long work_last;

/*
 * The function the bench patches. noipa: callers are compiled as if its body were unknown, so
 * no caller relies on which registers this particular body clobbers (gcc's -fipa-ra), on its
 * purity or on a constant-propagated clone; a replacement body is then free to differ.
 */
__attribute__((noipa)) unsigned long work(unsigned long x)
{
	unsigned long h = x ^ 0x9e3779b97f4a7c15ul;

	for (int i = 0; i < 8; i++)
		h = h * 31 + (h >> 7) + (unsigned long)i;
	__atomic_store_n(&work_last, x, __ATOMIC_RELAXED);
	return h;
}

enum mode { SPIN, PACED, PERCALL };

struct worker {
	pthread_t thread;
	int index;
	unsigned long calls;	/* updated every 1024 calls (spin) or every call (paced) */
	unsigned long sink;
	char pad[64];
};

static enum mode mode;
static long sleep_us = 1000;
static unsigned long batch_calls = 1000000;
static long gap_ms = 100;
static struct worker workers[MAX_THREADS];
static int nthreads;
static int started;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void sleep_for_us(long us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) != 0)
		;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	unsigned long x = (unsigned long)w->index << 32, acc;

	acc = work(x++);
	__atomic_add_fetch(&started, 1, __ATOMIC_RELEASE);
	switch (mode) {
	case SPIN:
		for (;;) {
			for (int i = 0; i < 1024; i++)
				acc += work(x++);
			__atomic_store_n(&w->calls, w->calls + 1024, __ATOMIC_RELAXED);
			__atomic_store_n(&w->sink, acc, __ATOMIC_RELAXED);
		}
	case PACED:
		for (;;) {
			acc += work(x++);
			__atomic_store_n(&w->calls, w->calls + 1, __ATOMIC_RELAXED);
			__atomic_store_n(&w->sink, acc, __ATOMIC_RELAXED);
			sleep_for_us(sleep_us);
		}
	case PERCALL:
		for (unsigned long batch = 0;; batch++) {
			double t0 = now_ns(), t1;

			for (unsigned long i = 0; i < batch_calls; i++)
				acc += work(x++);
			t1 = now_ns();
			__atomic_store_n(&w->calls, w->calls + batch_calls, __ATOMIC_RELAXED);
			__atomic_store_n(&w->sink, acc, __ATOMIC_RELAXED);
			pthread_mutex_lock(&out_lock);
			printf("{\"thread\": %d, \"batch\": %lu, \"calls\": %lu, \"ns_per_call\": %.3f, "
			       "\"result\": %lu}\n", w->index, batch, batch_calls,
			       (t1 - t0) / (double)batch_calls, work(1));
			fflush(stdout);
			pthread_mutex_unlock(&out_lock);
			if (gap_ms > 0)
				sleep_for_us(gap_ms * 1000);
		}
	}
	return NULL;
}

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	pthread_mutex_lock(&out_lock);
	vprintf(fmt, ap);
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
	va_end(ap);
}

int main(int argc, char **argv)
{
	char line[128];

	if (argc < 3)
		goto usage;
	if (strcmp(argv[1], "spin") == 0)
		mode = SPIN;
	else if (strcmp(argv[1], "paced") == 0)
		mode = PACED;
	else if (strcmp(argv[1], "percall") == 0)
		mode = PERCALL;
	else
		goto usage;
	nthreads = atoi(argv[2]);
	if (nthreads < 1 || nthreads > MAX_THREADS)
		goto usage;
	if (mode == PACED && argc > 3)
		sleep_us = atol(argv[3]);
	if (mode == PERCALL && argc > 3)
		batch_calls = strtoul(argv[3], NULL, 10);
	if (mode == PERCALL && argc > 4)
		gap_ms = atol(argv[4]);
	if (sleep_us < 0 || batch_calls < 1 || gap_ms < 0)
		goto usage;

	printf("pid %d threads %d mode %s\n", (int)getpid(), nthreads, argv[1]);
	fflush(stdout);
	for (int i = 0; i < nthreads; i++) {
		workers[i].index = i;
		if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	while (__atomic_load_n(&started, __ATOMIC_ACQUIRE) < nthreads)
		usleep(1000);
	say("ready\n");

	while (fgets(line, sizeof(line), stdin)) {
		unsigned long x;

		if (sscanf(line, "probe %lu", &x) == 1) {
			say("probe %lu %lu\n", x, work(x));
		} else if (strncmp(line, "calls", 5) == 0) {
			unsigned long total = 0;

			for (int i = 0; i < nthreads; i++)
				total += __atomic_load_n(&workers[i].calls, __ATOMIC_RELAXED);
			say("calls %lu\n", total);
		} else if (strncmp(line, "quit", 4) == 0) {
			break;
		}
	}
	return 0;
usage:
	fprintf(stderr, "usage: %s spin|paced <threads> [sleep_us]\n"
		"       %s percall <threads> [calls_per_batch] [gap_ms]\n", argv[0], argv[0]);
	return 2;
}
