/* A prefork XML service on libexpat: the parent binds a TCP port on 127.0.0.1 and forks
 * WORKERS processes that accept on it, one thread per connection, one parser per connection.
 *
 * Request:  "<len> <final>\n" followed by max(len, 0) bytes of XML.
 * The bytes go into XML_GetBuffer() and are parsed with XML_ParseBuffer(parser, len, final):
 * the length comes from the client, as in the programs CVE-2024-45490 is about.
 * Reply:    "OK <elements> <byte-index>\n" or "ERR <code> <message>\n"; after a final chunk or
 *           an error the parser is reset for the next document.
 *
 * usage: xmlsrv PORT WORKERS        (prints "ready <pid>..." once every worker accepts)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <expat.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

struct conn {
  int fd;
  long elements;
};

static void XMLCALL start_element(void *data, const XML_Char *name, const XML_Char **atts) {
  (void)name;
  (void)atts;
  ((struct conn *)data)->elements++;
}

static int read_full(int fd, char *buf, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, buf, n);
    if (r <= 0)
      return -1;
    buf += r;
    n -= (size_t)r;
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

static void reply(int fd, const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w <= 0)
      return;
    s += w;
    n -= (size_t)w;
  }
}

static void *serve(void *arg) {
  struct conn c = {.fd = (int)(long)arg, .elements = 0};
  XML_Parser p = XML_ParserCreate(NULL);
  char line[64], out[256];
  XML_SetUserData(p, &c);
  XML_SetStartElementHandler(p, start_element);
  for (;;) {
    int len, final;
    if (read_line(c.fd, line, sizeof line) || sscanf(line, "%d %d", &len, &final) != 2)
      break;
    if (len > (1 << 20))
      break;
    char *buf = XML_GetBuffer(p, len > 0 ? len : 1);
    if (buf == NULL || (len > 0 && read_full(c.fd, buf, (size_t)len)))
      break;
    if (XML_ParseBuffer(p, len, final) == XML_STATUS_ERROR) {
      enum XML_Error e = XML_GetErrorCode(p);
      snprintf(out, sizeof out, "ERR %d %s\n", (int)e, XML_ErrorString(e));
      final = 1;
    } else {
      snprintf(out, sizeof out, "OK %ld %lld\n", c.elements,
               (long long)XML_GetCurrentByteIndex(p));
    }
    if (final) {
      XML_ParserReset(p, NULL);
      XML_SetUserData(p, &c);
      XML_SetStartElementHandler(p, start_element);
      c.elements = 0;
    }
    reply(c.fd, out);
  }
  XML_ParserFree(p);
  close(c.fd);
  return NULL;
}

static void worker(int ls) {
  for (;;) {
    int fd = accept(ls, NULL, NULL);
    if (fd < 0)
      continue;
    pthread_t t;
    if (pthread_create(&t, NULL, serve, (void *)(long)fd) == 0)
      pthread_detach(t);
    else
      close(fd);
  }
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s PORT WORKERS\n", argv[0]);
    return 2;
  }
  int nworkers = atoi(argv[2]);
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 512)) {
    perror("bind/listen");
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  printf("ready %d", (int)getpid());
  for (int i = 0; i < nworkers; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      worker(ls);
    }
    printf(" %d", (int)pid);
  }
  printf("\n");
  fflush(stdout);
  while (wait(NULL) > 0)
    ;
  return 0;
}
