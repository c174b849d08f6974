"""ASGI middleware (pure ASGI: no task per request): the request body limits (size; for JSON, encoding and
depth), and per-request telemetry."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import invalid_input
from api.metrics import LATENCY, REQUESTS
from nmdc_runtime import logs
from nmdc_runtime.db import READS_ONLY
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


def json_body_problem(body: bytes, max_depth: int) -> tuple[list[str | int], str, str] | None:
    """Why a JSON request body may not reach a route, as the (loc, message, type) of a 422; None when it may,
    or when it is not JSON at all (the route's own parser answers that with a 422)."""
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        return ["body"], f"the body is not UTF-8 (byte {exc.start})", "json_invalid"
    try:
        value = json.loads(text)
    except RecursionError:
        # Deeper than the parser's own stack allows: find where without it.
        field = _field_in_text(text, max_depth)
    except json.JSONDecodeError:
        return None
    except ValueError as exc:
        # Valid JSON the parser still refuses (an integer of more than 4,300 digits): the framework says 400.
        return ["body"], f"the body cannot be read: {exc}", "json_invalid"
    else:
        field = _field_in_value(value, max_depth)
        if field is None:
            return None
    return ["body", *field], f"JSON nested deeper than {max_depth} levels", "json_too_deep"


def _field_in_value(value: object, max_depth: int) -> list[str | int] | None:
    """Where a parsed JSON value (level 1) holds a container deeper than `max_depth`: [its top-level key or
    index]; None when it holds none."""
    if not _deeper_than(value, max_depth):
        return None
    members = value.items() if isinstance(value, dict) else enumerate(value)
    return next([field] for field, child in members if _deeper_than(child, max_depth - 1))


def _deeper_than(value: object, max_depth: int) -> bool:
    """Whether a parsed JSON value (level 1) nests deeper than `max_depth` levels: level by level, no path."""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(max_depth):
        if not level:
            return False
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return bool(level)


_STRINGS_AND_PUNCTUATION = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]')


def _field_in_text(text: str, max_depth: int) -> list[str | int]:
    """Where JSON text too deep to parse first nests deeper than `max_depth`: [its top-level key or index],
    or [] when that is not known. A scan of its strings and punctuation, without recursion."""
    depth, field, key, in_array = 0, None, "", False
    for match in _STRINGS_AND_PUNCTUATION.finditer(text):
        token = match.group()
        if token[0] == '"':
            key = token
        elif token in "{[":
            depth += 1
            if depth > max_depth:
                break
            if depth == 1:
                field, in_array = (0, True) if token == "[" else (None, False)
        elif depth != 1:
            depth -= token in "]}"
        elif token == ":":
            field = json.loads(key)
        elif token == "," and in_array:
            field += 1
        else:
            depth -= token in "]}"
    return [field] if depth > max_depth and field is not None else []


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
    """Answer 422, naming the field, to a JSON body that is not UTF-8, that the parser refuses though it is JSON,
    or that nests deeper than `max_depth`, before any route reads it: the framework's own parsing and
    serializing fail on such bodies deep inside (undocumented 400s, and 500s)."""

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
        problem = json_body_problem(body, self.max_depth)
        if problem is not None:
            await invalid_input(*problem)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


REQUEST_SESSIONS = "nmdc.sessions"
"""The ASGI scope key of the database sessions a request's handler was given (`api.deps.SessionDep`)."""


class RequestSessions:
    """Close the database sessions a request was given once it is answered, whatever happened.

    Making and closing a session does no I/O unless it holds a transaction: a service that committed left
    none, and a read session (`api.deps.ReadSessionDep`) never holds one on the server; one left open is
    rolled back, a round trip, in the thread pool.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            for session in scope.get(REQUEST_SESSIONS, ()):
                if session.in_transaction() and not session.info.get(READS_ONLY):
                    await run_in_threadpool(session.close)
                else:
                    session.close()


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
