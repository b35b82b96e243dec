/* A small HTTP server on Debian's installed libevent (evhttp), for the installed-library case.
 *
 *   GET /             -> "ok"                      (the load)
 *   GET /echo?v=TEXT  -> puts TEXT in an X-Echo response header through evhttp_add_header and
 *                        says whether libevent accepted the value (CVE-2026-63385: a value with
 *                        CR LF + space, an obsolete continuation, is accepted before the fix)
 *   any request       -> reports the X-Trailer request header if the request had one (chunked
 *                        trailers were merged into the request headers before CVE-2026-63379)
 *
 * usage: evhttp_server PORT
 */
#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void handle(struct evhttp_request *req, void *arg)
{
	(void)arg;
	struct evbuffer *out = evbuffer_new();
	const char *uri = evhttp_request_get_uri(req);
	const char *trailer = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Trailer");
	if (strncmp(uri, "/echo", 5) == 0) {
		struct evkeyvalq q;
		const char *v = NULL;
		if (evhttp_parse_query(uri, &q) == 0)
			v = evhttp_find_header(&q, "v");
		int rc = v ? evhttp_add_header(evhttp_request_get_output_headers(req), "X-Echo", v) : -2;
		evbuffer_add_printf(out, "echo-header: %s\n",
				    rc == 0 ? "accepted" : rc == -1 ? "rejected" : "missing");
		if (v)
			evhttp_clear_headers(&q);
	} else {
		evbuffer_add_printf(out, "ok\n");
	}
	if (trailer)
		evbuffer_add_printf(out, "x-trailer: %s\n", trailer);
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		return 2;
	}
	struct event_base *base = event_base_new();
	struct evhttp *http = evhttp_new(base);
	evhttp_set_gencb(http, handle, NULL);
	if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)atoi(argv[1])) != 0) {
		perror("bind");
		return 1;
	}
	event_base_dispatch(base);
	return 0;
}
