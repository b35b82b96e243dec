/*
 * Load generator for the demo server: C concurrent connections send valid requests in a loop
 * and check every reply.
 *
 *   loadgen <port> [-c connections] [-d seconds] [-t timeout_ms] [-r requests_per_connection]
 *
 * Runs until SIGINT/SIGTERM (or -d seconds), then prints one JSON object with the totals.
 * It prints "ready" once every connection has had one good reply.
 * A request fails when the connection cannot be made or breaks, when no reply arrives within
 * the timeout, or when the reply is not the one the protocol promises. After a failure the
 * connection is closed and made again. Each connection also reconnects every -r requests, so
 * the server's accept path stays busy too.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define LINE 512

enum { F_CONNECT, F_TIMEOUT, F_IO, F_WRONG, F_KINDS };
static const char *fail_names[F_KINDS] = { "connect", "timeout", "io", "wrong_reply" };

struct conn_stats {
	unsigned long ok, failed[F_KINDS];
	unsigned long connects;
	double max_latency_us, sum_latency_us;
	char first_failure[160];
};

static int port;
static int timeout_ms = 2000;
static int per_conn = 500;
static volatile sig_atomic_t stop;
static struct conn_stats stats[MAX_CONNS];
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_failure[200];

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int connect_server(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((unsigned short)port);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Send req, read one reply line into reply. Returns 0 or an F_* failure kind. */
static int round_trip(int fd, const char *req, size_t len, char *reply, size_t cap)
{
	size_t got = 0;
	double deadline = now_us() + timeout_ms * 1000.0;

	while (len > 0) {
		ssize_t w = send(fd, req, len, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return F_IO;
		req += w;
		len -= (size_t)w;
	}
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)((deadline - now_us()) / 1000.0);
		int pr;
		ssize_t r;

		if (left < 0)
			return F_TIMEOUT;
		pr = poll(&p, 1, left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return F_IO;
		if (pr == 0)
			return F_TIMEOUT;
		r = recv(fd, reply + got, cap - 1 - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return F_IO;
		got += (size_t)r;
		reply[got] = '\0';
		if (memchr(reply, '\n', got)) {
			/* One request in flight at a time: a reply is exactly one line. */
			if (reply[got - 1] != '\n')
				return F_WRONG;
			reply[got - 1] = '\0';
			return 0;
		}
		if (got >= cap - 1)
			return F_WRONG;
	}
}

static void record_failure(struct conn_stats *st, int kind, const char *req, const char *reply)
{
	st->failed[kind]++;
	if (st->first_failure[0] == '\0') {
		snprintf(st->first_failure, sizeof(st->first_failure), "%s: request %.40s reply %.60s",
			 fail_names[kind], req, kind == F_WRONG ? reply : "-");
		pthread_mutex_lock(&fail_lock);
		if (first_failure[0] == '\0')
			snprintf(first_failure, sizeof(first_failure), "%s", st->first_failure);
		pthread_mutex_unlock(&fail_lock);
	}
}

static void *conn_main(void *arg)
{
	struct conn_stats *st = arg;
	unsigned int seed = (unsigned int)(st - stats) * 2654435761u + 1;
	char req[LINE], reply[LINE], value[80], want[LINE];
	int fd = -1, sent_on_fd = 0;
	unsigned long step = 0;

	value[0] = '\0';
	while (!stop) {
		int kind, n = 0;
		double t0;

		if (fd < 0 || sent_on_fd >= per_conn) {
			if (fd >= 0) {
				close(fd);
				fd = -1;
			}
			value[0] = '\0';
			sent_on_fd = 0;
			fd = connect_server();
			st->connects++;
			if (fd < 0) {
				record_failure(st, F_CONNECT, "(connect)", "");
				usleep(10000);
				continue;
			}
		}
		/* Cycle through the valid requests; every reply is checked. */
		switch (step++ % 4) {
		case 0:
			n = snprintf(req, sizeof(req), "PING\n");
			snprintf(want, sizeof(want), "PONG");
			break;
		case 1: {
			int len = 1 + (int)(rand_r(&seed) % 64);

			for (int i = 0; i < len; i++)
				value[i] = (char)('a' + rand_r(&seed) % 26);
			value[len] = '\0';
			n = snprintf(req, sizeof(req), "SET %d %s\n", len, value);
			snprintf(want, sizeof(want), "OK %d", len);
			break;
		}
		case 2:
			n = snprintf(req, sizeof(req), "GET\n");
			snprintf(want, sizeof(want), value[0] ? "VALUE %s" : "VALUE", value);
			break;
		case 3:
			n = snprintf(req, sizeof(req), "STATS\n");
			snprintf(want, sizeof(want), "STATS served=");
			break;
		}
		t0 = now_us();
		kind = round_trip(fd, req, (size_t)n, reply, sizeof(reply));
		sent_on_fd++;
		if (kind == 0) {
			int good = strncmp(want, "STATS", 5) == 0 ? strncmp(reply, want, strlen(want)) == 0
								  : strcmp(reply, want) == 0;
			if (!good)
				kind = F_WRONG;
		}
		if (kind == 0) {
			double dt = now_us() - t0;

			st->ok++;
			st->sum_latency_us += dt;
			if (dt > st->max_latency_us)
				st->max_latency_us = dt;
		} else {
			req[n - 1] = '\0';
			record_failure(st, kind, req, reply);
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t threads[MAX_CONNS];
	struct sigaction sa = { .sa_handler = on_signal };
	double duration = 0, t_start, elapsed, max_lat = 0, sum_lat = 0;
	unsigned long ok = 0, failed[F_KINDS] = { 0 }, failed_total = 0, connects = 0;
	int conns = 4, opt, ready = 0;

	while ((opt = getopt(argc, argv, "c:d:t:r:")) != -1) {
		switch (opt) {
		case 'c': conns = atoi(optarg); break;
		case 'd': duration = atof(optarg); break;
		case 't': timeout_ms = atoi(optarg); break;
		case 'r': per_conn = atoi(optarg); break;
		default: goto usage;
		}
	}
	if (optind != argc - 1 || conns < 1 || conns > MAX_CONNS || timeout_ms < 1 || per_conn < 1)
		goto usage;
	port = atoi(argv[optind]);

	/* No SA_RESTART: the signal also wakes the main thread's sleep. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	t_start = now_us();
	for (int i = 0; i < conns; i++) {
		if (pthread_create(&threads[i], NULL, conn_main, &stats[i]) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	while (!stop) {
		elapsed = (now_us() - t_start) / 1e6;
		if (duration > 0 && elapsed >= duration)
			break;
		if (!ready) {
			int all = 1;

			for (int i = 0; i < conns; i++)
				all &= __atomic_load_n(&stats[i].ok, __ATOMIC_RELAXED) > 0;
			if (all) {
				ready = 1;
				printf("ready\n");
				fflush(stdout);
			}
		}
		usleep(ready ? 50000 : 2000);
	}
	stop = 1;
	for (int i = 0; i < conns; i++)
		pthread_join(threads[i], NULL);
	elapsed = (now_us() - t_start) / 1e6;

	for (int i = 0; i < conns; i++) {
		ok += stats[i].ok;
		connects += stats[i].connects;
		sum_lat += stats[i].sum_latency_us;
		if (stats[i].max_latency_us > max_lat)
			max_lat = stats[i].max_latency_us;
		for (int k = 0; k < F_KINDS; k++) {
			failed[k] += stats[i].failed[k];
			failed_total += stats[i].failed[k];
		}
	}
	printf("{\"connections\": %d, \"seconds\": %.3f, \"ok\": %lu, \"failed\": %lu, "
	       "\"failures\": {", conns, elapsed, ok, failed_total);
	for (int k = 0; k < F_KINDS; k++)
		printf("%s\"%s\": %lu", k ? ", " : "", fail_names[k], failed[k]);
	printf("}, \"connects\": %lu, \"requests_per_second\": %.0f, \"mean_latency_us\": %.1f, "
	       "\"max_latency_us\": %.1f, \"timeout_ms\": %d, \"first_failure\": ",
	       connects, elapsed > 0 ? ok / elapsed : 0.0, ok ? sum_lat / ok : 0.0, max_lat,
	       timeout_ms);
	if (first_failure[0]) {
		putchar('"');
		for (const char *p = first_failure; *p; p++) {
			if (*p == '"' || *p == '\\')
				putchar('\\');
			if ((unsigned char)*p >= 0x20)
				putchar(*p);
		}
		printf("\"}\n");
	} else {
		printf("null}\n");
	}
	return 0;
usage:
	fprintf(stderr, "usage: %s <port> [-c connections] [-d seconds] [-t timeout_ms] "
		"[-r requests_per_connection]\n", argv[0]);
	return 2;
}
