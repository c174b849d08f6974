"""Small HTTP servers the site tests point the agent at: a hostile data site and the internal service it tries
to reach through the agent. Real sockets on this machine, served from a thread of the test."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[[BaseHTTPRequestHandler], None]


class Recorder:
    """A server on 127.0.0.1 that answers each path with its route and records every request it gets."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes = routes or {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent: dict[str, int] = {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append((self.path, dict(self.headers)))
                route = recorder.routes.get(self.path)
                if route is None:
                    body = b"internal: top secret answer\n"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                route(self)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def redirect(location: str, status: int = 302) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def flood(recorder: Recorder, path: str, total: int, *, declare_length: bool = False) -> Route:
    """Sends `total` bytes (without a Content-Length unless told), counting in `recorder.sent[path]` what
    actually went out before the client hung up."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        if declare_length:
            handler.send_header("Content-Length", str(total))
        handler.end_headers()
        chunk = b"x" * 65536
        recorder.sent[path] = 0
        try:
            while recorder.sent[path] < total:
                handler.wfile.write(chunk)
                recorder.sent[path] += len(chunk)
        except OSError:
            pass  # the client stopped reading and closed

    return route


def body(data: bytes) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route
