/*
 * opus-bpf demo server: a small multithreaded key/value line server.
 *
 *   server <port> [workers]      port 0 picks a free loopback port
 *
 * It prints "pid <pid> port <port> workers <n>" and then "ready" on stdout.
 * One acceptor thread owns an epoll set (listening socket + every connection, one-shot) and
 * hands readable connections to a pool of worker threads, which parse complete request lines
 * with handle_request() and answer on the same connection.
 *
 * Protocol: one request per line, one reply per line.
 *   PING                  -> PONG
 *   SET <len> <data>      -> OK <len>            store <data> (exactly <len> bytes) in the session
 *   GET                   -> VALUE <data>
 *   NAME <name>           -> OK hello <name>
 *   AUTH <password>       -> OK admin | ERR denied
 *   KEY                   -> KEY <server key>    admin sessions only, else ERR denied
 *   STATS                 -> STATS served=<n> sessions=<n>
 *   QUIT                  -> BYE                 and the server closes the connection
 * Errors: ERR syntax | ERR length | ERR unknown | ERR denied
 *
 * THE BUG (CWE-787, fixed by fix.diff): SET checks that <len> matches the data the client sent,
 * but never that it fits session.value[64]. A SET of 72 bytes overwrites the next field,
 * is_admin, and the session may then read the server key without the password.
 * The overflow stays inside struct session (a request line is at most MAX_LINE bytes and the
 * fields the server itself relies on come after the input buffer), so the demo can show the
 * bug again and again without crashing the server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LINE 256
#define VALUE_MAX 64
#define MAX_WORKERS 64

/* Error values handle_request() returns; the worker turns them into "ERR ..." replies. */
enum {
	ERR_SYNTAX = -1,
	ERR_LENGTH = -2,
	ERR_UNKNOWN = -3,
	ERR_DENIED = -4,
	REQ_QUIT = -5,
};

struct session {
	/* Request state the parser works on. */
	char value[VALUE_MAX];		/* SET stores its data here */
	int is_admin;			/* set by AUTH with the right password */
	unsigned int value_len;
	char name[32];
	char inbuf[MAX_LINE + 1];	/* bytes received, not yet parsed */
	/* Connection state only the worker touches (out of reach of an overflow of value). */
	size_t inlen;
	unsigned long requests;
	int fd;
	struct session *next;		/* work queue link */
};

static unsigned long requests_served;	/* every request parsed, all sessions */
static unsigned long sessions_open;
static unsigned long sessions_total;
static char server_key[33];		/* handed out by KEY to admin sessions only */
static char admin_password[33];

static int epfd;
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static struct session *queue_head, *queue_tail;

static const char *err_text(int err)
{
	switch (err) {
	case ERR_LENGTH: return "ERR length";
	case ERR_UNKNOWN: return "ERR unknown";
	case ERR_DENIED: return "ERR denied";
	default: return "ERR syntax";
	}
}

/* Constant-time comparison of a NUL-terminated password with the expected one. */
static int password_ok(const char *given, const char *expected)
{
	size_t n = strlen(expected);
	unsigned char diff = strlen(given) != n;

	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)given[i] ^ (unsigned char)expected[i];
	return diff == 0;
}

/*
 * Parse one request line (NUL-terminated, without its newline) of session s and write the
 * reply (without its newline) to out. Returns the reply length, or a negative ERR_* value.
 */
int handle_request(struct session *s, char *line, size_t n, char *out, size_t cap)
{
	char *cmd = line, *arg, *end;
	unsigned long len;
	int r;

	__atomic_add_fetch(&requests_served, 1, __ATOMIC_RELAXED);
	s->requests++;
	while (*cmd == ' ')
		cmd++;
	arg = strchr(cmd, ' ');
	if (arg)
		*arg++ = '\0';
	else
		arg = line + n;

	if (strcmp(cmd, "PING") == 0) {
		return snprintf(out, cap, "PONG");
	} else if (strcmp(cmd, "SET") == 0) {
		/* SET <len> <data>: <len> must be the exact number of data bytes. */
		if (*arg < '0' || *arg > '9')
			return ERR_SYNTAX;
		errno = 0;
		len = strtoul(arg, &end, 10);
		if (errno != 0 || *end != ' ')
			return ERR_SYNTAX;
		end++;
		if (len == 0 || len != (size_t)(line + n - end))
			return ERR_LENGTH;
		memcpy(s->value, end, len);
		s->value_len = len;
		return snprintf(out, cap, "OK %lu", len);
	} else if (strcmp(cmd, "GET") == 0) {
		if (s->value_len == 0)
			return snprintf(out, cap, "VALUE");
		return snprintf(out, cap, "VALUE %.*s", (int)s->value_len, s->value);
	} else if (strcmp(cmd, "NAME") == 0) {
		if (*arg == '\0' || strlen(arg) >= sizeof(s->name))
			return ERR_LENGTH;
		strcpy(s->name, arg);
		return snprintf(out, cap, "OK hello %s", s->name);
	} else if (strcmp(cmd, "AUTH") == 0) {
		if (!password_ok(arg, admin_password))
			return ERR_DENIED;
		s->is_admin = 1;
		return snprintf(out, cap, "OK admin");
	} else if (strcmp(cmd, "KEY") == 0) {
		if (!s->is_admin)
			return ERR_DENIED;
		return snprintf(out, cap, "KEY %s", server_key);
	} else if (strcmp(cmd, "STATS") == 0) {
		r = snprintf(out, cap, "STATS served=%lu sessions=%lu",
			     __atomic_load_n(&requests_served, __ATOMIC_RELAXED),
			     __atomic_load_n(&sessions_open, __ATOMIC_RELAXED));
		return r;
	} else if (strcmp(cmd, "QUIT") == 0) {
		return REQ_QUIT;
	} else if (*cmd == '\0') {
		return ERR_SYNTAX;
	}
	return ERR_UNKNOWN;
}

static void queue_push(struct session *s)
{
	pthread_mutex_lock(&queue_lock);
	s->next = NULL;
	if (queue_tail)
		queue_tail->next = s;
	else
		queue_head = s;
	queue_tail = s;
	pthread_cond_signal(&queue_cond);
	pthread_mutex_unlock(&queue_lock);
}

static struct session *queue_pop(void)
{
	struct session *s;

	pthread_mutex_lock(&queue_lock);
	while (!queue_head)
		pthread_cond_wait(&queue_cond, &queue_lock);
	s = queue_head;
	queue_head = s->next;
	if (!queue_head)
		queue_tail = NULL;
	pthread_mutex_unlock(&queue_lock);
	return s;
}

/* Send all of buf on a non-blocking socket. Returns 0, or -1 if the connection is gone. */
static int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);

		if (w > 0) {
			buf += w;
			len -= (size_t)w;
		} else if (w < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			if (poll(&p, 1, 5000) <= 0)
				return -1;
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else {
			return -1;
		}
	}
	return 0;
}

static void close_session(struct session *s)
{
	close(s->fd);
	__atomic_sub_fetch(&sessions_open, 1, __ATOMIC_RELAXED);
	free(s);
}

/*
 * Read what the connection has, answer every complete line. Returns 0 to keep the
 * connection, -1 to close it (end of stream, error, QUIT or an over-long line).
 */
static int serve_session(struct session *s)
{
	char out[MAX_LINE + 64];

	for (;;) {
		ssize_t r = recv(s->fd, s->inbuf + s->inlen, MAX_LINE - s->inlen, 0);

		if (r == 0)
			return -1;
		if (r < 0) {
			if (errno == EAGAIN)
				return 0;
			if (errno == EINTR)
				continue;
			return -1;
		}
		s->inlen += (size_t)r;
		for (;;) {
			char *nl = memchr(s->inbuf, '\n', s->inlen);
			size_t n, used;
			int len;

			if (!nl) {
				if (s->inlen >= MAX_LINE) {
					send_all(s->fd, "ERR syntax\n", 11);
					return -1;
				}
				break;
			}
			n = (size_t)(nl - s->inbuf);
			used = n + 1;
			if (n > 0 && s->inbuf[n - 1] == '\r')
				n--;
			s->inbuf[n] = '\0';
			len = handle_request(s, s->inbuf, n, out, sizeof(out) - 1);
			if (len == REQ_QUIT) {
				send_all(s->fd, "BYE\n", 4);
				return -1;
			}
			if (len < 0)
				len = snprintf(out, sizeof(out) - 1, "%s", err_text(len));
			else if ((size_t)len > sizeof(out) - 2)
				len = (int)sizeof(out) - 2;
			out[len++] = '\n';
			if (send_all(s->fd, out, (size_t)len) < 0)
				return -1;
			memmove(s->inbuf, s->inbuf + used, s->inlen - used);
			s->inlen -= used;
		}
	}
}

static void *worker_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct session *s = queue_pop();

		if (serve_session(s) < 0) {
			close_session(s);
		} else {
			struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.ptr = s };

			if (epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev) < 0)
				close_session(s);
		}
	}
	return NULL;
}

static void *acceptor_main(void *arg)
{
	int lfd = *(int *)arg;
	struct epoll_event evs[64];

	for (;;) {
		int n = epoll_wait(epfd, evs, 64, -1);

		for (int i = 0; i < n; i++) {
			struct session *s = evs[i].data.ptr;

			if (s) {
				queue_push(s);
				continue;
			}
			for (;;) {
				int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT };
				int one = 1;

				if (fd < 0)
					break;
				s = calloc(1, sizeof(*s));
				if (!s) {
					close(fd);
					continue;
				}
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				s->fd = fd;
				ev.data.ptr = s;
				__atomic_add_fetch(&sessions_open, 1, __ATOMIC_RELAXED);
				__atomic_add_fetch(&sessions_total, 1, __ATOMIC_RELAXED);
				if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
					close_session(s);
			}
		}
	}
	return NULL;
}

/* Fill buf with 2*n random hex digits (n bytes from /dev/urandom). */
static void random_hex(char *buf, size_t n)
{
	unsigned char raw[16];
	FILE *f = fopen("/dev/urandom", "rb");

	if (n > sizeof(raw))
		n = sizeof(raw);
	if (!f || fread(raw, 1, n, f) != n) {
		perror("/dev/urandom");
		exit(1);
	}
	fclose(f);
	for (size_t i = 0; i < n; i++)
		sprintf(buf + 2 * i, "%02x", raw[i]);
}

int main(int argc, char **argv)
{
	static int lfd;
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t alen = sizeof(addr);
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	pthread_t t;
	sigset_t sigs;
	int nworkers = 4, sig, one = 1;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s <port> [workers]\n", argv[0]);
		return 2;
	}
	if (argc == 3)
		nworkers = atoi(argv[2]);
	if (nworkers < 1 || nworkers > MAX_WORKERS) {
		fprintf(stderr, "workers must be 1..%d\n", MAX_WORKERS);
		return 2;
	}
	random_hex(server_key, 16);
	random_hex(admin_password, 16);

	/* Only the main thread takes SIGINT/SIGTERM (sigwait below). */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		perror("socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons((unsigned short)atoi(argv[1]));
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 128) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
		perror("bind/listen");
		return 1;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) < 0) {
		perror("epoll");
		return 1;
	}
	for (int i = 0; i < nworkers; i++) {
		if (pthread_create(&t, NULL, worker_main, NULL) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	if (pthread_create(&t, NULL, acceptor_main, &lfd) != 0) {
		perror("pthread_create");
		return 1;
	}
	printf("pid %d port %d workers %d\n", (int)getpid(), ntohs(addr.sin_port), nworkers);
	printf("ready\n");
	fflush(stdout);

	sigwait(&sigs, &sig);
	printf("stopping on signal %d: requests served %lu, sessions %lu\n", sig,
	       __atomic_load_n(&requests_served, __ATOMIC_RELAXED),
	       __atomic_load_n(&sessions_total, __ATOMIC_RELAXED));
	fflush(stdout);
	return 0;
}
