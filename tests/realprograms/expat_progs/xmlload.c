/* Load for xmlsrv: CONNS connections, each sending valid documents in two chunks
 * ("<len> 0" then "<len> 1") and checking every reply, until SIGINT/SIGTERM or SECONDS.
 * Prints "documents=N chunks=N failed=N errors=N": failed = a reply other than the expected
 * OK, errors = a connection that could not connect, was reset or closed. Exit 0 iff both are 0.
 *
 * usage: xmlload PORT CONNS SECONDS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port;
static volatile sig_atomic_t stop;
static atomic_long documents, chunks, failed, errors;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int send_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w <= 0)
      return -1;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_line(int fd, char *buf, size_t cap) {
  size_t i = 0;
  while (i + 1 < cap) {
    ssize_t r = read(fd, buf + i, 1);
    if (r <= 0)
      return -1;
    if (buf[i] == '\n') {
      buf[i] = 0;
      return 0;
    }
    i++;
  }
  return -1;
}

/* one chunk; 0: reply "OK <want_elements> ...", 1: another reply, -1: connection lost */
static int chunk(int fd, const char *xml, int final, long want_elements) {
  char head[32], line[256];
  size_t n = strlen(xml);
  snprintf(head, sizeof head, "%zu %d\n", n, final);
  if (send_all(fd, head, strlen(head)) || send_all(fd, xml, n) || read_line(fd, line, sizeof line))
    return -1;
  atomic_fetch_add(&chunks, 1);
  long el;
  if (sscanf(line, "OK %ld", &el) == 1 && el == want_elements)
    return 0;
  fprintf(stderr, "xmlload: unexpected reply '%s'\n", line);
  return 1;
}

static void *client(void *arg) {
  (void)arg;
  char part1[512], part2[512];
  unsigned seq = 0;
  while (!stop) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
      atomic_fetch_add(&errors, 1);
      close(fd);
      usleep(100000);
      continue;
    }
    /* a few hundred documents per connection, then a new connection */
    for (int i = 0; i < 300 && !stop; i++, seq++) {
      snprintf(part1, sizeof part1,
               "<?xml version=\"1.0\"?>\n<order id=\"%u\"><item sku=\"a%u\">one &amp; two</item>",
               seq, seq % 97);
      snprintf(part2, sizeof part2, "<item sku=\"b\"><![CDATA[x<y]]></item><note>%u</note></order>\n",
               seq * 7);
      int r = chunk(fd, part1, 0, 2);
      if (r == 0)
        r = chunk(fd, part2, 1, 4);
      if (r < 0) {
        atomic_fetch_add(&errors, 1);
        break;
      }
      if (r > 0)
        atomic_fetch_add(&failed, 1);
      atomic_fetch_add(&documents, 1);
    }
    close(fd);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s PORT CONNS SECONDS\n", argv[0]);
    return 2;
  }
  port = atoi(argv[1]);
  int conns = atoi(argv[2]);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  pthread_t *t = calloc((size_t)conns, sizeof *t);
  for (int i = 0; i < conns; i++)
    pthread_create(&t[i], NULL, client, NULL);
  struct timespec end, now;
  clock_gettime(CLOCK_MONOTONIC, &end);
  end.tv_sec += atoi(argv[3]);
  while (!stop) {
    usleep(20000);
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
      stop = 1;
  }
  for (int i = 0; i < conns; i++)
    pthread_join(t[i], NULL);
  printf("documents=%ld chunks=%ld failed=%ld errors=%ld\n", atomic_load(&documents),
         atomic_load(&chunks), atomic_load(&failed), atomic_load(&errors));
  return atomic_load(&failed) || atomic_load(&errors) ? 1 : 0;
}
