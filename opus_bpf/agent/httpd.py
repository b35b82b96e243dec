"""The agent's HTTP side: /metrics for Prometheus, /healthz and /status for operators.

Why a small WSGI app rather than prometheus_client.start_http_server: the same port also serves
/status (what is patched where, as JSON) and, only when OPUS_BPF_AGENT_TEST_HOOKS=1, the
test hook POST /-/test/metrics that the Prometheus integration test uses to create samples.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from opus_bpf import metrics

log = logging.getLogger("opus_bpf.agent")

TEST_HOOKS_ENV = "OPUS_BPF_AGENT_TEST_HOOKS"
#: Functions the test hook may call: only the ones that record samples.
TEST_HOOK_FUNCTIONS = {
    "observe_apply": metrics.observe_apply,
    "bundle_verification_failed": metrics.bundle_verification_failed,
    "count_patched_calls": metrics.count_patched_calls,
}

StartResponse = Callable[..., object]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.debug("http: " + format, *args)


def _json(start_response: StartResponse, code: str, obj: object) -> list[bytes]:
    body = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
    start_response(code, [("Content-Type", "application/json"),
                          ("Content-Length", str(len(body)))])
    return [body]


def make_app(status: Callable[[], dict], health: Callable[[], dict]) -> Callable:
    """WSGI app; `status` and `health` return JSON-able dicts from the agent."""
    metrics_app = make_wsgi_app(metrics.REGISTRY)
    hooks = os.environ.get(TEST_HOOKS_ENV) == "1"

    def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            h = health()
            return _json(start_response, "200 OK" if h.get("ok") else "503 Service Unavailable",
                         h)
        if path == "/status":
            return _json(start_response, "200 OK", status())
        if path == "/-/test/metrics" and hooks and method == "POST":
            return _test_hook(environ, start_response)
        if path == "/":
            body = b"opus-bpf agent: /metrics /healthz /status\n"
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body]
        return _json(start_response, "404 Not Found", {"error": f"no such path {path}"})

    return app


def _test_hook(environ: dict, start_response: StartResponse) -> list[bytes]:
    """Call one whitelisted metrics function: {"function": name, "kwargs": {...}}."""
    try:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        req = json.loads(environ["wsgi.input"].read(n))
        fn = TEST_HOOK_FUNCTIONS[req["function"]]
        fn(**req.get("kwargs", {}))
    except (KeyError, TypeError, ValueError) as exc:
        return _json(start_response, "400 Bad Request", {"error": repr(exc)})
    return _json(start_response, "200 OK", {"ok": True})


def serve_http(listen: str, app: Callable) -> tuple[WSGIServer, threading.Thread]:
    """Start the server in a daemon thread; returns (server, thread)."""
    host, port = metrics.split_listen(listen)
    cls = _V6Server if ":" in host else _Server
    server = make_server(host, port, app, server_class=cls, handler_class=_QuietHandler)
    t = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    t.start()
    return server, t
