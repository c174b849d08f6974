"""Every route answers 503 with `Retry-After`, never 500, while the database's tables are locked under concurrent
requests: the hot writes on their fast paths (two statements in autocommit) and on their general paths (a
transaction) included. Locked whole, nothing gets through; locked against writes, reads go on and every write
answers 503. (A stopped server, SIGSTOP, is tests/e2e/test_embedded_server.py's, with the same requests.)"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from nmdc_runtime.db import Database
from nmdc_runtime.models import Base
from tests.integration.conftest import ADMIN_PASSWORD
from tests.stall_requests import Request, Stage, build, problems, requests, uncovered, when_stopped

DEADLINE = 0.5


@pytest.fixture
def stalled(settings, clean_database, admin_headers) -> Iterator[tuple[TestClient, Stage]]:
    app = create_app(settings.model_copy(update={"database_timeout_seconds": DEADLINE}))
    with TestClient(app, raise_server_exceptions=False) as client:
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        yield client, build(client, settings=settings, admin_login=login)


@contextlib.contextmanager
def _locked(database: Database, mode: str) -> Iterator[None]:
    """Every runtime table locked in `mode` by another transaction, until the block ends."""
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with database.engine.connect() as conn, conn.begin() as held:
        conn.execute(sa.text(f"LOCK TABLE {tables} IN {mode} MODE"))
        try:
            yield
        finally:
            held.rollback()


def _send(client: TestClient, sent: list[Request]):
    with ThreadPoolExecutor(16) as pool:
        return list(zip(sent, pool.map(lambda request: request.send(client), sent), strict=True))


def test_every_route_answers_503_and_never_500_while_the_tables_are_locked(stalled, clean_database):
    client, stage = stalled
    sent = requests(stage)
    assert uncovered(client.app.openapi(), sent) == set(), "a route without a request here"

    with _locked(clean_database, "ACCESS EXCLUSIVE"):
        answers = _send(client, sent)
    # `/health` reads no table: the server answers it.
    assert problems(answers, expected=lambda r: 200 if r.route == "/health" else when_stopped(r)) == []

    # Reads go on; each write, its fast path's first statement answered, waits on its second (or on its
    # transaction's first lock) until the deadline.
    with _locked(clean_database, "EXCLUSIVE"):
        answers = _send(client, sent)
    assert problems(answers, expected=lambda r: 200 if r.reads else 503) == []

    # Nothing was left half-done: the API answers as before once the tables are free.
    assert (
        client.patch(f"/operations/{stage.ids['beating']}", json={}, headers=stage.site_e).status_code == 200
    )
    assert client.post(f"/jobs/{stage.ids['unclaimed']}:claim", headers=stage.site_e).status_code == 201
