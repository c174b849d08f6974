"""ASGI middleware: the request body limits (size; for JSON, encoding and depth) and Prometheus metrics."""

from __future__ import annotations

import json
import re
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import invalid_input
from nmdc_runtime.schemas.common import MAX_JSON_DEPTH

REQUESTS = Counter("nmdc_http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram(
    "nmdc_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class BodyLimitMiddleware:
    """Answer 413 to bodies over `max_bytes`, declared or streamed, before the app reads them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        seen = 0
        started = rejected = False

        async def limited_receive() -> Message:
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # A streamed (chunked) body ran over: answer 413 now, and tell the app the client is
                    # gone, so whatever it answers to a half-read body (400, say) is never sent.
                    rejected = True
                    if not started:
                        await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body is larger than {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# A JSON string (escapes included) or one structural character: what a depth scan needs to see.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]')


def too_deep(text: str, max_depth: int) -> list[str | int] | None:
    """Where the JSON `text` first nests deeper than `max_depth` (the keys and indexes down to the container
    that crosses it), or None. A scan without recursion, so no depth is too deep to measure."""
    if text.count("{") + text.count("[") <= max_depth:
        return None
    # One entry per open container: the key (object) or index (array) of the value being read in it.
    path: list[str | int | None] = []
    key = ""
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            key = token
        elif token in "{[":
            path.append(0 if token == "[" else None)
            if len(path) > max_depth:
                return [step for step in path[:-1] if step is not None]
        elif not path:
            continue  # Not JSON; the route's parser says so.
        elif token == ":":
            path[-1] = json.loads(key)
        elif token == ",":
            if isinstance(path[-1], int):
                path[-1] += 1
        else:
            path.pop()
    return None


def _is_json(scope: Scope) -> bool:
    """Whether the app will parse the body as JSON: FastAPI does so for JSON media types and for none at all."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media_type = value.split(b";")[0].strip().lower()
            return media_type == b"application/json" or (
                media_type.startswith(b"application/") and media_type.endswith(b"+json")
            )
    return True


class JsonBodyMiddleware:
    """Answer 422, naming the field, to a JSON body that is not UTF-8 or nests deeper than `max_depth`, before
    any route parses it: parsing and serializing such a body fail deep inside the framework (400 and 500)."""

    def __init__(self, app: ASGIApp, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        # Read whole: the body limit outside this middleware bounds it, and the route reads it whole anyway.
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # The client left, or the body limit has already answered 413.
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            text = body.decode()
        except UnicodeDecodeError as exc:
            refusal = invalid_input(["body"], f"the body is not UTF-8 (byte {exc.start})", "json_invalid")
            await refusal(scope, receive, send)
            return
        path = too_deep(text, self.max_depth)
        if path is not None:
            # Name the request's field (the first key), not a path as long as the nesting.
            message = f"JSON nested deeper than {self.max_depth} levels"
            await invalid_input(["body", *path[:1]], message, "json_too_deep")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Count and time requests by route template (not raw path, which would explode the label set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(time.perf_counter() - start)
