"""The API's bounded engine: each wait (a pooled connection, a statement) ends at the deadline, a connection
that timed out is discarded and the rest of the pool is kept; unbounded engines in the same process still wait.

A stopped server (SIGSTOP) is in tests/e2e/test_embedded_server.py; here a statement that outlasts the
deadline stands in for it, with the server's own statement_timeout lifted so that only the client can end it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database, DeadlineExceeded

DEADLINE = 0.5


@pytest.fixture
def bounded(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url, deadline_seconds=DEADLINE)
    yield database
    database.dispose()


def _backend_pid(conn: sa.Connection) -> int:
    return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_a_statement_past_the_deadline_fails_and_its_connection_is_discarded(bounded: Database):
    conn = bounded.engine.connect()
    with bounded.engine.connect() as kept:  # back in the pool before the other one times out
        kept_pid = _backend_pid(kept)
        kept_dbapi = kept.connection.dbapi_connection
    with conn:
        conn.execute(sa.text("SET statement_timeout = 0"))
        timed_out = conn.connection.dbapi_connection
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError) as failure:
            conn.execute(sa.text("SELECT pg_sleep(2)"))
        elapsed = time.monotonic() - started
    assert isinstance(failure.value.orig, DeadlineExceeded)
    assert DEADLINE <= elapsed < DEADLINE + 0.5
    assert failure.value.connection_invalidated
    assert timed_out.closed
    assert bounded.engine.pool.checkedout() == 0
    # The rest of the pool is kept: the connection checked in before is handed out again, unchanged...
    with bounded.engine.connect() as again:
        assert again.connection.dbapi_connection is kept_dbapi
        assert _backend_pid(again) == kept_pid
        # ...and the next one is a fresh connection, never the closed one.
        with bounded.engine.connect() as fresh:
            assert fresh.connection.dbapi_connection is not timed_out
            assert fresh.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_the_server_also_ends_a_statement_at_the_deadline(bounded: Database):
    with bounded.engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == f"{int(DEADLINE * 1000)}ms"
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT pg_sleep(2)"))


def test_waiting_for_a_pooled_connection_ends_at_the_deadline(settings: Settings):
    database = Database(settings.database_url, deadline_seconds=DEADLINE, pool_size=1, max_overflow=0)
    try:
        with database.engine.connect():
            started = time.monotonic()
            with pytest.raises(sa.exc.TimeoutError):
                database.engine.connect()
            assert DEADLINE <= time.monotonic() - started < DEADLINE + 0.5
    finally:
        database.dispose()


def test_unbounded_engines_still_wait_as_long_as_it_takes(bounded: Database, database: Database):
    with bounded.engine.connect() as conn:  # the process's wait callback is in place from here on
        conn.execute(sa.text("SELECT 1"))
    with database.engine.connect() as conn:
        started = time.monotonic()
        conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": DEADLINE * 2})
        assert time.monotonic() - started >= DEADLINE * 2
