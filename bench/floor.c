/*
 * The floor of stopping every thread of a process with ptrace, on this machine, right now.
 *
 *   floor <pid> [-r rounds] [-R serial_rounds] [-g gap_us] [-m all|serial|both] [-f] [-s]
 *
 * Seizes every thread of <pid> (PTRACE_SEIZE, no options that outlive us: if this program dies
 * the threads are detached and run on), then:
 *   all:    R rounds of PTRACE_INTERRUPT every thread, waitpid each stop, PTRACE_GETREGS each,
 *           PTRACE_CONT all. pause = first interrupt -> last resume returned; stop = first
 *           interrupt -> last stop seen; held = for each thread, its stop seen -> its resume.
 *   serial: -R rounds (default R) of, one thread at a time: interrupt, wait, GETREGS, CONT.
 *           held = that thread's stop seen -> its resume (the floor of a design holding one
 *           thread at a time); catch = its interrupt -> its resume (includes the wait for a
 *           runnable thread to get a CPU and reach its stop).
 * Rounds are gap_us apart (default 10000) so the target runs between them. -f runs floor itself
 * as SCHED_FIFO (priority 10): resumed threads then cannot preempt it between two PTRACE_CONTs.
 * Prints one JSON object, every duration in microseconds (CLOCK_MONOTONIC); -s adds every pause
 * sample.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TASKS 4096

static pid_t tids[MAX_TASKS];
static int ntids;

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what, pid_t tid)
{
	fprintf(stderr, "floor: %s (tid %d): %s\n", what, (int)tid, strerror(errno));
	exit(1);
}

static int seized(pid_t tid)
{
	for (int i = 0; i < ntids; i++)
		if (tids[i] == tid)
			return 1;
	return 0;
}

/* Seize every thread of pid; re-read /proc/pid/task until no new thread shows up. */
static void seize_all(pid_t pid)
{
	char path[64];
	int added;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	do {
		DIR *d = opendir(path);
		struct dirent *e;

		if (!d)
			die("opendir /proc/PID/task", pid);
		added = 0;
		while ((e = readdir(d)) != NULL) {
			pid_t tid = (pid_t)atoi(e->d_name);

			if (tid <= 0 || seized(tid))
				continue;
			if (ntids == MAX_TASKS) {
				fprintf(stderr, "floor: more than %d threads\n", MAX_TASKS);
				exit(1);
			}
			if (ptrace(PTRACE_SEIZE, tid, 0, 0) < 0) {
				if (errno == ESRCH)
					continue;
				die("PTRACE_SEIZE", tid);
			}
			tids[ntids++] = tid;
			added = 1;
		}
		closedir(d);
	} while (added);
}

/*
 * Wait until tid is in the stop PTRACE_INTERRUPT asked for. A signal-delivery stop that comes
 * first is passed on (the thread runs into the pending interrupt trap right after).
 */
static void wait_interrupt_stop(pid_t tid)
{
	for (;;) {
		int st;

		if (waitpid(tid, &st, __WALL) < 0) {
			if (errno == EINTR)
				continue;
			die("waitpid", tid);
		}
		if (!WIFSTOPPED(st)) {
			fprintf(stderr, "floor: thread %d exited (status 0x%x)\n", (int)tid, st);
			exit(1);
		}
		if ((st >> 16) == PTRACE_EVENT_STOP)
			return;
		if ((st >> 16) == 0) {
			if (ptrace(PTRACE_CONT, tid, 0, (void *)(long)WSTOPSIG(st)) < 0)
				die("PTRACE_CONT (signal)", tid);
			continue;
		}
		/* Another ptrace event (clone, exec, exit): resume and keep waiting. */
		if (ptrace(PTRACE_CONT, tid, 0, 0) < 0)
			die("PTRACE_CONT (event)", tid);
	}
}

static void sleep_us(long us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Print {"median":..,"p99":..,"min":..,"max":..,"mean":..,"n":..} of v (sorts v). */
static void print_stats(const char *name, double *v, int n)
{
	double sum = 0;
	int p99;

	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	for (int i = 0; i < n; i++)
		sum += v[i];
	p99 = (99 * n + 99) / 100 - 1;	/* nearest rank: ceil(0.99 n) - 1 */
	if (p99 < 0)
		p99 = 0;
	printf("\"%s\": {\"median\": %.1f, \"p99\": %.1f, \"min\": %.1f, \"max\": %.1f, "
	       "\"mean\": %.1f, \"n\": %d}", name,
	       n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v[p99], v[0], v[n - 1], sum / n, n);
}

int main(int argc, char **argv)
{
	int rounds = 100, srounds = -1, opt, do_all = 1, do_serial = 1, samples = 0, fifo = 0;
	long gap = 10000;
	pid_t pid;
	struct user_regs_struct regs;
	double *pause, *stop, *held, *sheld, *scatch, *ordered, *stopped_at;
	int nheld = 0, nsheld = 0;

	while ((opt = getopt(argc, argv, "r:R:g:m:fs")) != -1) {
		switch (opt) {
		case 'r': rounds = atoi(optarg); break;
		case 'R': srounds = atoi(optarg); break;
		case 'g': gap = atol(optarg); break;
		case 's': samples = 1; break;
		case 'f': fifo = 1; break;
		case 'm':
			do_all = strcmp(optarg, "serial") != 0;
			do_serial = strcmp(optarg, "all") != 0;
			if (strcmp(optarg, "all") && strcmp(optarg, "serial") && strcmp(optarg, "both"))
				goto usage;
			break;
		default: goto usage;
		}
	}
	if (srounds < 0)
		srounds = rounds;
	if (optind != argc - 1 || rounds < 1 || srounds < 1 || gap < 0)
		goto usage;
	pid = (pid_t)atoi(argv[optind]);

	if (fifo) {
		struct sched_param sp = { .sched_priority = 10 };

		if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0)
			die("sched_setscheduler(SCHED_FIFO)", getpid());
	}
	seize_all(pid);
	pause = calloc((size_t)rounds, sizeof(double));
	stop = calloc((size_t)rounds, sizeof(double));
	ordered = calloc((size_t)rounds, sizeof(double));
	held = calloc((size_t)rounds * (size_t)ntids, sizeof(double));
	sheld = calloc((size_t)srounds * (size_t)ntids, sizeof(double));
	scatch = calloc((size_t)srounds * (size_t)ntids, sizeof(double));
	stopped_at = calloc((size_t)ntids, sizeof(double));
	if (!pause || !stop || !ordered || !held || !sheld || !scatch || !stopped_at) {
		perror("calloc");
		return 1;
	}

	for (int r = 0; do_all && r < rounds; r++) {
		double t0 = now_us(), t_stop, t_end;

		for (int i = 0; i < ntids; i++)
			if (ptrace(PTRACE_INTERRUPT, tids[i], 0, 0) < 0)
				die("PTRACE_INTERRUPT", tids[i]);
		for (int i = 0; i < ntids; i++) {
			wait_interrupt_stop(tids[i]);
			stopped_at[i] = now_us();
		}
		t_stop = now_us();
		for (int i = 0; i < ntids; i++)
			if (ptrace(PTRACE_GETREGS, tids[i], 0, &regs) < 0)
				die("PTRACE_GETREGS", tids[i]);
		for (int i = 0; i < ntids; i++) {
			if (ptrace(PTRACE_CONT, tids[i], 0, 0) < 0)
				die("PTRACE_CONT", tids[i]);
			held[nheld++] = now_us() - stopped_at[i];
		}
		t_end = now_us();
		pause[r] = t_end - t0;
		stop[r] = t_stop - t0;
		ordered[r] = pause[r];
		sleep_us(gap);
	}
	for (int r = 0; do_serial && r < srounds; r++) {
		for (int i = 0; i < ntids; i++) {
			double t0 = now_us(), t_stop, t_end;

			if (ptrace(PTRACE_INTERRUPT, tids[i], 0, 0) < 0)
				die("PTRACE_INTERRUPT", tids[i]);
			wait_interrupt_stop(tids[i]);
			t_stop = now_us();
			if (ptrace(PTRACE_GETREGS, tids[i], 0, &regs) < 0)
				die("PTRACE_GETREGS", tids[i]);
			if (ptrace(PTRACE_CONT, tids[i], 0, 0) < 0)
				die("PTRACE_CONT", tids[i]);
			t_end = now_us();
			scatch[nsheld] = t_end - t0;
			sheld[nsheld++] = t_end - t_stop;
		}
		sleep_us(gap);
	}

	/* Leave: stop each thread once more so PTRACE_DETACH is allowed, then detach. */
	for (int i = 0; i < ntids; i++)
		if (ptrace(PTRACE_INTERRUPT, tids[i], 0, 0) < 0)
			die("PTRACE_INTERRUPT", tids[i]);
	for (int i = 0; i < ntids; i++) {
		wait_interrupt_stop(tids[i]);
		if (ptrace(PTRACE_DETACH, tids[i], 0, 0) < 0)
			die("PTRACE_DETACH", tids[i]);
	}

	printf("{\"pid\": %d, \"threads\": %d, \"rounds\": %d, \"gap_us\": %ld, \"policy\": \"%s\", "
	       "\"unit\": \"us\"", (int)pid, ntids, rounds, gap, fifo ? "fifo" : "normal");
	if (do_all) {
		printf(", \"all\": {");
		print_stats("pause", pause, rounds);
		printf(", ");
		print_stats("stop", stop, rounds);
		printf(", ");
		print_stats("held_per_thread", held, nheld);
		if (samples) {
			printf(", \"pause_samples\": [");
			for (int r = 0; r < rounds; r++)
				printf("%s%.1f", r ? ", " : "", ordered[r]);
			printf("]");
		}
		printf("}");
	}
	if (do_serial) {
		printf(", \"serial\": {\"rounds\": %d, ", srounds);
		print_stats("held_per_thread", sheld, nsheld);
		printf(", ");
		print_stats("catch_per_thread", scatch, nsheld);
		printf("}");
	}
	printf("}\n");
	return 0;
usage:
	fprintf(stderr, "usage: %s <pid> [-r rounds] [-R serial_rounds] [-g gap_us] "
		"[-m all|serial|both] [-f] [-s]\n", argv[0]);
	return 2;
}
