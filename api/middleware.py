"""ASGI middleware (pure ASGI: no task per request): the request body limits (size; for JSON, encoding and
depth), and per-request telemetry."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import invalid_input
from api.metrics import LATENCY, REQUESTS
from nmdc_runtime import logs
from nmdc_runtime.schemas.common import MAX_JSON_DEPTH


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


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access = logging.getLogger("nmdc_runtime.requests")


class RequestTelemetry:
    """Per request, in one pass: a request id (the caller's `X-Request-ID` when it is sane, else a new one,
    sent back in `X-Request-ID` and put on every log line written for the request), the Prometheus counters
    by route template (never the raw path, which would explode the label set), and one log line.

    `log_requests=False` keeps the metrics and the header but writes no line (`make dev` without `--verbose`).
    """

    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        rid = _incoming_request_id(scope) or uuid.uuid4().hex
        token = logs.request_id.set(rid)
        header = (b"x-request-id", rid.encode())

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_label(scope)
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            if self.log_requests:
                client = scope.get("client")
                access.info(
                    "%s %s %s %.1f ms",
                    method,
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 1),
                        "client": client[0] if client else None,
                    },
                )
            logs.request_id.reset(token)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None:
        return route.path
    # Plain routes (the OpenAPI pages) leave no `route` but an endpoint; they have no path parameters.
    return scope["path"] if "endpoint" in scope else "unmatched"
