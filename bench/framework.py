"""What the required frameworks cost a request apart from our code: FastAPI per request, SQLAlchemy per
statement (bench/README.md, "The bounds").

    .venv/bin/python -m bench.framework                  # about half a minute
    .venv/bin/python -m bench.framework --requests 5000

Two measurements, this process's CPU time, median of `--rounds` rounds after a warm-up:

- `fastapi_us`: a `POST /jobs/{job_id}:claim` route that answers `{}` at once, called through ASGI one request at
  a time (no HTTP), with no dependency or with four (as many as the claim resolves: the session, the policy,
  the site and its bearer token), `async def` or plain `def` (which FastAPI runs in its thread pool, as the
  API's routes that reach the database), with or without the API's four middlewares (api/middleware.py).
- `statement_us`: one nine-column row with two parameters from the database the settings resolve (the embedded
  server under NMDC_HOME, or NMDC_DATABASE_URL's), on one autocommit connection of the API's engine (with its
  deadline): through psycopg2's cursor, through SQLAlchemy's `exec_driver_sql` (what the store's one-statement
  paths use), and through an ORM session's `execute` of the same text.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import time
from collections.abc import Callable
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request, Response

from api.middleware import BodyLimitMiddleware, JsonBodyMiddleware, RequestSessions, RequestTelemetry
from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database, resolve_urls

_ROW = "SELECT now(), 'x'::text, 1, 2, 3, 'abc'::text, now(), %(a)s::text, %(b)s::int"
_PARAMS = {"a": "hello", "b": 5}


async def _one(request: Request) -> int:
    return 1


async def _two(request: Request, one: Annotated[int, Depends(_one)]) -> int:
    return 2


def _answer() -> Response:
    return Response(b"{}", media_type="application/json")


def _plain(job_id: str) -> Response:
    return _answer()


def _with_dependencies(
    job_id: str,
    a: Annotated[int, Depends(_one)],
    b: Annotated[int, Depends(_one, use_cache=False)],
    c: Annotated[int, Depends(_two)],
) -> Response:
    # Four, one of them under another: as the claim's session, policy and site (with its bearer token).
    return _answer()


def _app(*, dependencies: bool, middleware: bool, thread_pool: bool) -> FastAPI:
    """An app with one claim-shaped route that does nothing."""
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})
    handler = _with_dependencies if dependencies else _plain
    if not thread_pool:
        run = handler

        async def handler(**kwargs) -> Response:
            return run(**kwargs)

        # FastAPI reads the parameters, and so the dependencies, from the signature.
        handler.__signature__ = inspect.signature(run)
    app.post("/jobs/{job_id}:claim")(handler)
    if middleware:
        app.add_middleware(RequestSessions)
        app.add_middleware(JsonBodyMiddleware)
        app.add_middleware(BodyLimitMiddleware, max_bytes=1 << 20)
        app.add_middleware(RequestTelemetry, log_requests=False)
    return app


async def _post(app: FastAPI) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jobs/j-1:claim",
        "raw_path": b"/jobs/j-1:claim",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", b"0")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"the route answered {sent[0]['status']}")


def _fastapi(requests: int, rounds: int) -> dict[str, float]:
    """CPU µs per request of each app, the median of its rounds."""
    figures = {}
    for dependencies in (False, True):
        for thread_pool in (False, True):
            for middleware in (False, True):
                app = _app(dependencies=dependencies, middleware=middleware, thread_pool=thread_pool)

                async def rounds_of(app=app) -> list[float]:
                    values = []
                    for _ in range(rounds + 1):
                        started = time.process_time()
                        for _ in range(requests):
                            await _post(app)
                        values.append(1e6 * (time.process_time() - started) / requests)
                    return values[1:]  # the first round warms up

                name = "{}_{}_{}".format(
                    "four_dependencies" if dependencies else "no_dependency",
                    "def" if thread_pool else "async_def",
                    "with_middleware" if middleware else "bare",
                )
                figures[name] = round(statistics.median(asyncio.run(rounds_of())), 1)
    return figures


def _per_statement(run: Callable[[], object], statements: int, rounds: int) -> float:
    values = []
    for _ in range(rounds + 1):
        started = time.process_time()
        for _ in range(statements):
            run()
        values.append(1e6 * (time.process_time() - started) / statements)
    return round(statistics.median(values[1:]), 1)


def _statements(database: Database, statements: int, rounds: int) -> dict[str, float]:
    """CPU µs per statement through the driver, SQLAlchemy Core and an ORM session, on one connection."""
    with database.autocommit_engine.connect() as conn, database.read_sessionmaker() as session:
        cursor = conn.connection.dbapi_connection.cursor()

        def driver() -> None:
            cursor.execute(_ROW, _PARAMS)
            cursor.fetchone()

        text = sa.text(
            _ROW.replace("%(a)s::text", "CAST(:a AS text)").replace("%(b)s::int", "CAST(:b AS int)")
        )
        return {
            "psycopg2_cursor": _per_statement(driver, statements, rounds),
            "sqlalchemy_exec_driver_sql": _per_statement(
                lambda: conn.exec_driver_sql(_ROW, _PARAMS).one(), statements, rounds
            ),
            "sqlalchemy_session_execute": _per_statement(
                lambda: session.execute(text, _PARAMS).one(), statements, rounds
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round, per app")
    parser.add_argument("--statements", type=int, default=3000, help="statements per round, per way")
    parser.add_argument("--rounds", type=int, default=3, help="rounds after the warm-up")
    args = parser.parse_args()
    settings = Settings()
    database = Database(resolve_urls(settings).runtime, deadline_seconds=settings.database_timeout_seconds)
    try:
        report = {
            "fastapi_us": _fastapi(args.requests, args.rounds),
            "statement_us": _statements(database, args.statements, args.rounds),
        }
    finally:
        database.dispose()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
