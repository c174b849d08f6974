"""Small HTTP servers the site tests point the agent at: a hostile data site, the internal service it tries
to reach through the agent, and a scripted proxy in front of the API. Real sockets on this machine, served
from a thread of the test."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

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


def drip(every: float, size: int) -> Route:
    """Declares `size` bytes, then sends one every `every` seconds (until the client hangs up)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        try:
            for _ in range(size):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(every)
        except OSError:
            pass  # the client hung up

    return route


@dataclass
class Rule:
    """Answer requests of `method` whose path matches `path` (and whose body `when` accepts) with `status`,
    `times` times (None: until `stop()`), once `after` (another rule) has been used up."""

    method: str
    path: str
    status: int
    times: int | None = 1
    retry_after: int | None = None
    when: Callable[[bytes], bool] = lambda body: True
    after: Rule | None = None
    used: int = 0
    stopped: bool = False
    at: list[float] = field(default_factory=list)
    """When each scripted answer was given (`time.monotonic()`)."""

    def applies(self, method: str, path: str, body: bytes) -> bool:
        if self.stopped or (self.times is not None and self.used >= self.times):
            return False
        if self.after is not None and (self.after.times is None or self.after.used < self.after.times):
            return False
        return method == self.method and re.search(self.path, path) is not None and self.when(body)

    def stop(self) -> None:
        self.stopped = True


def finishing(body: bytes) -> bool:
    """A PATCH that finishes its operation."""
    try:
        return json.loads(body or b"{}").get("done") is True
    except ValueError:
        return False


class ScriptedApi:
    """An HTTP proxy in front of a live API: requests a `Rule` matches are answered by the rule (429s, 503s,
    401s, with `Retry-After`), the rest are passed on. `log` records every request: (time, method, path,
    status, body)."""

    HOP_BY_HOP = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive"})

    def __init__(self, upstream: str) -> None:
        self.rules: list[Rule] = []
        self.log: list[tuple[float, str, str, int, bytes]] = []
        self._lock = threading.Lock()
        self._upstream = httpx.Client(base_url=upstream, timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                content = self.rfile.read(length) if length else b""
                status, headers, body = proxy._answer(self.command, self.path, dict(self.headers), content)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, method: str, path: str, status: int, **options) -> Rule:
        """Script an answer (see `Rule`); the first rule that applies to a request answers it."""
        rule = Rule(method, path, status, **options)
        self.rules.append(rule)
        return rule

    def _answer(
        self, method: str, path: str, headers: dict[str, str], content: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            rule = next((r for r in self.rules if r.applies(method, path, content)), None)
            if rule is not None:
                rule.used += 1
                rule.at.append(time.monotonic())
        if rule is not None:
            answer = {"Content-Type": "application/json"}
            if rule.retry_after is not None:
                answer["Retry-After"] = str(rule.retry_after)
            status, body = rule.status, json.dumps({"detail": f"scripted {rule.status}"}).encode()
        else:
            sent = {k: v for k, v in headers.items() if k.lower() not in self.HOP_BY_HOP}
            response = self._upstream.request(method, path, content=content, headers=sent)
            answer = {
                k: v
                for k, v in response.headers.items()
                if k.lower() not in self.HOP_BY_HOP and k.lower() != "content-encoding"
            }
            status, body = response.status_code, response.content
        self.log.append((time.monotonic(), method, path.split("?")[0], status, content))
        return status, answer, body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._upstream.close()

    def __enter__(self) -> ScriptedApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
