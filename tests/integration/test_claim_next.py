"""`POST /jobs:claimNext` and `GET /operations/{op_id}:wait` in one API process (TestClient): who gets which
job, the waits and what ends them, the bounds, Idempotency-Key. The same across processes, the sensor and
shutdown: tests/e2e/test_waiting_processes.py."""

from __future__ import annotations

import asyncio
import select
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from nmdc_runtime.models import Operation
from nmdc_runtime.processes import wait_for
from nmdc_runtime.services import maintenance as maintenance_service
from nmdc_runtime.store import notices as notices_store
from tests.integration.claim_world import (
    World,
    claimed,
    create_workflow,
    finish_with_result,
    make_world,
    new_job,
)


@pytest.fixture
def world(client, clean_database, admin_headers, settings) -> World:
    return make_world(client, clean_database, admin_headers, settings)


def claim_next(world: World, headers: dict[str, str], **body):
    return world.client.post("/jobs:claimNext", json=body or None, headers=headers)


def test_claims_the_job_made_first_and_answers_as_a_claim_does_with_the_job(world):
    first, second = new_job(world), new_job(world)

    response = claim_next(world, world.site_e)

    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["job"]["id"] == first["id"]
    assert answer["job"]["status"] == "claimed" and answer["job"]["attempts"] == 1
    assert answer["metadata"]["job_id"] == first["id"] and answer["metadata"]["site_id"] == "site-e"
    # The operation is the one `:claim` answers with: the holder's repeat of it gets it unchanged.
    again = world.client.post(f"/jobs/{first['id']}:claim", headers=world.site_e)
    assert again.status_code == 200
    assert {**answer, "job": None} == {**again.json(), "job": None}
    assert claim_next(world, world.site_e).json()["job"]["id"] == second["id"]
    assert claim_next(world, world.site_e).status_code == 204


def test_only_jobs_the_site_may_claim_and_of_the_workflows_asked(world):
    create_workflow(world, "wf-gpu", ["gpu"])
    create_workflow(world, "wf-other")
    gpu = new_job(world, "wf-gpu")
    other = new_job(world, "wf-other")

    assert claim_next(world, world.site_d, workflow_ids=["wf-gpu"]).status_code == 204  # no gpu
    taken = claim_next(world, world.site_e, workflow_ids=["wf-other", "nosuch"])
    assert taken.json()["job"]["id"] == other["id"]
    assert claim_next(world, world.site_e, workflow_ids=["wf"]).status_code == 204
    assert claim_next(world, world.site_e).json()["job"]["id"] == gpu["id"]


def test_a_lapsed_lease_s_job_is_claimed_and_its_operation_ended(world):
    op = claimed(world, world.site_f)
    with world.database.session() as session:
        session.execute(
            sa.update(Operation)
            .where(Operation.id == op["id"])
            .values(lease_expire_time=datetime.now(UTC) - timedelta(seconds=1))
        )

    response = claim_next(world, world.site_e)

    assert response.status_code == 201
    assert response.json()["job"]["id"] == op["metadata"]["job_id"]
    assert response.json()["metadata"]["attempt"] == 2
    assert world.client.get(f"/operations/{op['id']}", headers=world.admin).json()["metadata"]["state"] == (
        "expired"
    )


def test_jobs_notify_only_when_they_become_unclaimed(world, settings):
    """The triggers of migration 0012: a job made, released, given back by an error or by the reaper sends its
    workflow on the channel; a claim, a heartbeat, an execution and a success send nothing."""
    listener = world.database.listening_connection()
    notices_store.listen(listener)

    def heard() -> list[str]:
        # A notification leaves at the commit, before the API answers: it is on its way, or never comes.
        select.select([listener], [], [], 0.3)
        return notices_store.received(listener)

    try:
        job = new_job(world)
        assert heard() == ["wf"]
        op = claimed(world, job=job)
        world.client.patch(
            f"/operations/{op['id']}", json={"metadata": {"progress": 5}}, headers=world.site_e
        )
        assert heard() == []
        assert world.client.post(f"/jobs/{job['id']}:release", headers=world.site_e).status_code == 200
        assert heard() == ["wf"]
        op = claimed(world, job=job)
        failed = {"done": True, "error": {"code": "UNAVAILABLE", "message": "no input"}}
        assert (
            world.client.patch(f"/operations/{op['id']}", json=failed, headers=world.site_e).status_code
            == 200
        )
        assert heard() == ["wf"]
        op = claimed(world, job=job)
        with world.database.session() as session:
            session.execute(
                sa.update(Operation)
                .where(Operation.id == op["id"])
                .values(lease_expire_time=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert heard() == []
        with world.database.session() as session:
            assert maintenance_service.reap_lapsed_leases(
                session, now=datetime.now(UTC), policy=settings.policy()
            )
        assert heard() == ["wf"]
        finish_with_result(world, claimed(world, job=job))
        assert heard() == []
    finally:
        listener.close()


def test_refusals(world, settings):
    new_job(world)
    user = world.client.post("/jobs:claimNext", headers=world.user)
    assert user.status_code == 403
    for body in (
        {"wait_seconds": 61},
        {"wait_seconds": -1},
        {"wait_seconds": "1"},
        {"workflow_ids": []},
        {"x": 1},
    ):
        assert claim_next(world, world.site_e, **body).status_code == 422, body
    too_long = claim_next(world, world.site_e, lease_seconds=settings.claim_lease_seconds + 1)
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "lease_seconds"]


def test_concurrent_callers_get_distinct_jobs_and_the_rest_wait_then_204(world):
    jobs = {new_job(world)["id"] for _ in range(5)}
    begun = time.monotonic()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: claim_next(world, world.site_e, wait_seconds=3), range(8)))

    statuses = sorted(response.status_code for response in answers)
    assert statuses == [201] * 5 + [204] * 3, [r.text for r in answers]
    assert {r.json()["job"]["id"] for r in answers if r.status_code == 201} == jobs
    assert time.monotonic() - begun >= 3  # the three that found nothing waited
    with world.database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Operation)) == 5


def _waiting(client: TestClient, n: int) -> None:
    """Until `n` requests wait in the app (their first look done and found nothing)."""
    wait_for(lambda: client.app.state.waiters.count == n, 10, f"{n} waiting requests")


def _connections_in_use(client: TestClient) -> int:
    database = client.app.state.database
    return database.engine.pool.checkedout() + database.autocommit_engine.pool.checkedout()


def test_a_waiter_holds_no_connection_and_is_woken_by_a_job_made_and_by_a_job_released(world):
    def wait():
        return claim_next(world, world.site_e, wait_seconds=20)

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(wait)
        _waiting(world.client, 1)
        # The sweeps and the revocation refresher borrow a connection now and then: the waiter holds none
        # if the pools are seen empty while it waits.
        wait_for(lambda: _connections_in_use(world.client) == 0, 5, "no connection in use")
        assert world.client.app.state.waiters.count == 1
        made_at = time.monotonic()
        job = new_job(world)
        answer = waiting.result(timeout=10)
        assert time.monotonic() - made_at < 1
        assert answer.status_code == 201 and answer.json()["job"]["id"] == job["id"]

        waiting = pool.submit(wait)
        _waiting(world.client, 1)
        released_at = time.monotonic()
        assert world.client.post(f"/jobs/{job['id']}:release", headers=world.site_e).status_code == 200
        answer = waiting.result(timeout=10)
        assert time.monotonic() - released_at < 1
        assert answer.status_code == 201 and answer.json()["job"]["id"] == job["id"]
        assert answer.json()["metadata"]["attempt"] == 1  # the release gave the attempt back


def test_a_client_that_goes_away_stops_waiting(world):
    """The request's ASGI `http.disconnect` (what uvicorn sends when the connection closes) ends its wait."""
    app = world.client.app
    body = b'{"wait_seconds": 20}'
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jobs:claimNext",
        "raw_path": b"/jobs:claimNext",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", world.site_e["Authorization"].encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }

    async def go_away() -> tuple[float, list[int], int]:
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []

        async def receive():
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        request = asyncio.create_task(app(scope, receive, send))
        while app.state.waiters.count != 1:
            await asyncio.sleep(0.01)
        gone.set()
        began = time.monotonic()
        await asyncio.wait_for(request, 10)
        return time.monotonic() - began, statuses, app.state.waiters.count

    took, statuses, left = world.client.portal.call(go_away)
    assert took < 1 and left == 0
    assert statuses == [204]  # answered into the void: nothing was claimed


def test_idempotency_key_replays_the_claim_and_a_204_is_not_remembered(world):
    key = {"Idempotency-Key": "claim-next-1"}
    assert claim_next(world, {**world.site_e, **key}).status_code == 204
    job = new_job(world)
    first = claim_next(world, {**world.site_e, **key})
    assert first.status_code == 201
    new_job(world)
    again = claim_next(world, {**world.site_e, **key})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and again.json()["job"]["id"] == job["id"]
    other_body = world.client.post(
        "/jobs:claimNext", json={"wait_seconds": 1}, headers={**world.site_e, **key}
    )
    assert other_body.status_code == 422


def test_wait_answers_when_the_operation_is_done_or_with_its_state_at_the_timeout(world):
    op = claimed(world)
    begun = time.monotonic()
    current = world.client.get(f"/operations/{op['id']}:wait?timeout_seconds=1", headers=world.site_f)
    assert current.status_code == 200 and current.json()["done"] is False
    assert 1 <= time.monotonic() - begun < 3
    assert current.json() == world.client.get(f"/operations/{op['id']}", headers=world.site_f).json()

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            world.client.get, f"/operations/{op['id']}:wait?timeout_seconds=20", headers=world.user
        )
        _waiting(world.client, 1)
        finish_with_result(world, op)
        finished_at = time.monotonic()
        answer = waiting.result(timeout=10)
    assert time.monotonic() - finished_at < 1
    assert answer.status_code == 200 and answer.json()["done"] is True
    assert answer.json()["metadata"]["state"] == "succeeded"
    assert world.client.get("/operations/op-nosuch:wait", headers=world.user).status_code == 404
    assert (
        world.client.get(f"/operations/{op['id']}:wait?timeout_seconds=61", headers=world.user).status_code
        == 422
    )


def test_waiters_past_the_bounds_get_429_and_the_bound_is_on_waiting(settings, clean_database, admin_headers):
    bounded = settings.model_copy(update={"max_waiters": 3, "max_waiters_per_site": 2})
    with TestClient(create_app(bounded)) as client, ThreadPoolExecutor(3) as pool:
        world = make_world(client, clean_database, admin_headers, settings)
        op = claimed(world)
        waits = [pool.submit(claim_next, world, world.site_e, wait_seconds=10) for _ in range(2)]
        _waiting(client, 2)
        per_site = claim_next(world, world.site_e, wait_seconds=10)
        assert per_site.status_code == 429 and per_site.headers["Retry-After"] == "5"
        assert "site-e" in per_site.json()["detail"]
        waits.append(pool.submit(claim_next, world, world.site_f, wait_seconds=10))
        _waiting(client, 3)
        in_all = client.get(f"/operations/{op['id']}:wait", headers=world.user)
        assert in_all.status_code == 429 and in_all.headers["Retry-After"] == "5"
        assert world.client.post(
            "/jobs:claimNext", json={"wait_seconds": 0}, headers=world.site_e
        ).status_code == (204)  # not waiting: not bounded
        made = {new_job(world)["id"] for _ in range(3)}
        assert {w.result(timeout=10).json()["job"]["id"] for w in waits} == made
        assert client.app.state.waiters.count == 0
