"""Each request sends its own statements and nothing around them: the one-statement changes (the holder's
claim, heartbeat and finish) and every read run on the autocommit pool (`Database.autocommit_engine`), so no
BEGIN, COMMIT, ROLLBACK or isolation SET goes to the server with them (nmdc_runtime/db.py `Database`).

Round trips are counted in psycopg2's wait callback, which runs once per exchange with the server, by the
request id each request is sent with (the callback runs in the request's context)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import psycopg2.extensions
import psycopg2.extras
import pytest

from nmdc_runtime import logs
from nmdc_runtime.models import Site
from nmdc_runtime.services.transactions import transaction
from tests.integration.builders import create_job, create_workflow, register


@pytest.fixture
def round_trips() -> Iterator[Counter]:
    """Exchanges with the server by request id, while the test runs."""
    previous = psycopg2.extensions.get_wait_callback()
    counted: Counter = Counter()

    def counting(conn) -> None:
        rid = logs.request_id.get()
        if rid is not None:
            counted[rid] += 1
        (previous or psycopg2.extras.wait_select)(conn)

    psycopg2.extensions.set_wait_callback(counting)
    yield counted
    psycopg2.extensions.set_wait_callback(previous)


def test_changes_of_one_statement_and_reads_send_nothing_else(
    client, admin_headers, site_headers, round_trips
):
    data_site = site_headers("site-d")
    exec_site = site_headers("site-e")
    create_workflow(client, admin_headers)
    resource = register(client, data_site)
    warm, job = (create_job(client, admin_headers, "assembly", [resource["id"]]) for _ in range(2))

    def send(method: str, path: str, rid: str, **kwargs) -> dict:
        response = client.request(method, path, headers={**exec_site, "X-Request-ID": rid}, **kwargs)
        assert response.status_code in (200, 201), response.text
        return response.json()

    # Each pool lends a connection it already holds from here on: connecting is not the request's work.
    send("POST", f"/jobs/{warm['id']}:claim", "warm-claim")
    send("GET", f"/jobs/{warm['id']}", "warm-read")
    round_trips.clear()

    operation = send("POST", f"/jobs/{job['id']}:claim", "claim")
    send("PATCH", f"/operations/{operation['id']}", "heartbeat", json={"metadata": {"progress": 0.5}})
    send("GET", f"/jobs/{job['id']}", "job")
    send("GET", f"/operations/{operation['id']}", "operation")
    send("GET", "/jobs?claimable=true", "claimable")
    send("GET", "/health", "health")

    assert dict(round_trips) == {
        "claim": 2,  # the job with the claim's terms; lock, insert the operation, move the job
        "heartbeat": 2,  # the operation and its job; the conditional update
        "job": 1,
        "operation": 1,
        "claimable": 1,
        "health": 1,
    }


def test_a_read_session_refuses_to_write(clean_database):
    # On the autocommit pool each statement would commit alone: a lock would end with its statement.
    with clean_database.read_sessionmaker() as session:
        with pytest.raises(RuntimeError, match="cannot hold a transaction"), transaction(session):
            pass
        session.add(Site(id="site-r", name="site-r"))
        with pytest.raises(RuntimeError, match="cannot write"):
            session.flush()
    with clean_database.sessionmaker() as session:
        assert session.get(Site, "site-r") is None
