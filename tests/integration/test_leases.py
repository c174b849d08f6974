"""Leases with short periods: heartbeats keep a claim, a lapsed one never blocks the next claim, late writers
get 409, attempts run out, and a paused operation does not lapse. Margins are generous: waits are at least
half a lease longer than the lease, and heartbeats come several times per lease."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.models import Job
from nmdc_runtime.services.maintenance import reap_lapsed_leases
from tests.integration.claim_world import (
    World,
    claim,
    claimed,
    create_workflow,
    execution_body,
    job_of,
    make_world,
    new_job,
    operation,
    post_execution,
)

LEASE = 1
LAPSE_WAIT = LEASE + 1.0


def reap(session, *, now, limit: int = 1000) -> list[str]:
    """The lease reaper's work, as its sensor does it."""
    policy = Policy(
        claim_lease_seconds=LEASE,
        max_lease_seconds=86400,
        operation_retention_seconds=30 * 24 * 3600,
        idempotency_retention_seconds=24 * 3600,
        max_attempts=2,
    )
    return reap_lapsed_leases(session, now=now, policy=policy, limit=limit)


@pytest.fixture
def short_client(settings, clean_database) -> Iterator[TestClient]:
    short = settings.model_copy(update={"claim_lease_seconds": LEASE, "max_attempts": 2})
    with TestClient(create_app(short)) as test_client:
        yield test_client


@pytest.fixture
def world(short_client, clean_database, admin_headers, settings) -> World:
    return make_world(short_client, clean_database, admin_headers, settings)


def test_heartbeats_keep_the_claim_alive(settings, clean_database, admin_headers):
    # A longer lease here: the heartbeat interval must stay well inside it even on a loaded machine.
    lease = 3
    app = create_app(settings.model_copy(update={"claim_lease_seconds": lease}))
    with TestClient(app) as client:
        world = make_world(client, clean_database, admin_headers, settings)
        op = claimed(world)
        job_id = op["metadata"]["job_id"]
        started = time.monotonic()
        beats = 0
        while time.monotonic() - started < lease * 1.7:
            time.sleep(0.5)
            beat = client.patch(
                f"/operations/{op['id']}", json={"metadata": {"beat": beats}}, headers=world.site_e
            )
            assert beat.status_code == 200, beat.text
            beats += 1
            assert claim(client, world.site_f, job_id).status_code == 409
        assert time.monotonic() - started > lease
        assert operation(world, op["id"])["metadata"]["state"] == "running"
        assert job_of(world, op)["attempts"] == 1


def test_a_lapsed_claim_is_taken_over_at_once_and_the_late_writer_gets_409(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    time.sleep(LAPSE_WAIT)
    # No reaper has run: the claim itself expires the lapsed operation.
    taken = claim(world.client, world.site_f, job_id)
    assert taken.status_code == 201, taken.text
    assert taken.json()["metadata"]["attempt"] == 2
    old = operation(world, op["id"])
    assert old["done"] is True
    assert old["metadata"]["state"] == "expired"
    assert old["error"]["code"] == "DEADLINE_EXCEEDED"
    assert old["result"] is None
    assert old["expire_time"] is not None
    assert job_of(world, op)["attempts"] == 2

    # Every late write of the site that lost the lease is refused.
    assert (
        world.client.patch(
            f"/operations/{op['id']}", json={"metadata": {"p": 1}}, headers=world.site_e
        ).status_code
        == 409
    )
    assert post_execution(world, op).status_code == 409
    assert world.client.post(f"/operations/{op['id']}:cancel", headers=world.site_e).status_code == 409
    assert world.client.post(f"/jobs/{job_id}:release", headers=world.site_e).status_code == 404
    assert claim(world.client, world.site_e, job_id).status_code == 409


def test_a_late_heartbeat_expires_the_operation_and_that_is_kept(world):
    op = claimed(world)
    time.sleep(LAPSE_WAIT)
    late = world.client.patch(
        f"/operations/{op['id']}", json={"metadata": {"progress": 90}}, headers=world.site_e
    )
    assert late.status_code == 409
    # The 409 did not roll the expiry back.
    stored = operation(world, op["id"])
    assert stored["metadata"]["state"] == "expired"
    assert stored["metadata"]["progress"] is None
    job = job_of(world, op)
    assert (job["status"], job["attempts"]) == ("unclaimed", 1)


def test_a_late_execution_expires_the_operation_and_keeps_nothing_else(world):
    op = claimed(world)
    time.sleep(LAPSE_WAIT)
    body = execution_body(op["id"])
    headers = {**world.site_e, "Idempotency-Key": "late-1"}
    url = f"/jobs/{op['metadata']['job_id']}/executions"
    assert world.client.post(url, json=body, headers=headers).status_code == 409
    assert operation(world, op["id"])["metadata"]["state"] == "expired"
    assert world.client.get(url, headers=world.user).json()["resources"] == []
    # The key was not used up by the refused request.
    assert world.client.post(url, json=body, headers=headers).status_code == 409


def test_attempts_run_out_and_the_job_fails(world):
    job = new_job(world)
    assert job["max_attempts"] == 2
    first = claimed(world, job=job)
    time.sleep(LAPSE_WAIT)
    second = claimed(world, world.site_f, job=job)
    assert second["metadata"]["attempt"] == 2
    time.sleep(LAPSE_WAIT)
    refused = claim(world.client, world.site_e, job["id"])
    assert refused.status_code == 409
    after = job_of(world, first)
    assert (after["status"], after["attempts"]) == ("failed", 2)
    assert operation(world, second["id"])["metadata"]["state"] == "expired"


def test_a_paused_operation_does_not_lapse_and_resume_gives_a_fresh_lease(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    assert world.client.post(f"/operations/{op['id']}:pause", headers=world.admin).status_code == 200
    time.sleep(LAPSE_WAIT)
    assert claim(world.client, world.site_f, job_id).status_code == 409
    with world.database.session() as session:
        assert reap(session, now=datetime.now(UTC)) == []
    resumed = world.client.post(f"/operations/{op['id']}:resume", headers=world.admin)
    assert resumed.status_code == 200
    lease_end = datetime.fromisoformat(resumed.json()["metadata"]["lease_expire_time"])
    assert lease_end > datetime.now(UTC)
    assert claim(world.client, world.site_f, job_id).status_code == 409
    time.sleep(LAPSE_WAIT)
    assert claim(world.client, world.site_f, job_id).status_code == 201


def test_an_admin_cancel_ends_a_lapsed_operation_at_once(world):
    op = claimed(world)
    time.sleep(LAPSE_WAIT)
    response = world.client.post(f"/operations/{op['id']}:cancel", headers=world.admin)
    assert response.status_code == 200
    body = response.json()
    assert (body["done"], body["metadata"]["state"], body["error"]["code"]) == (True, "canceled", "CANCELLED")
    assert job_of(world, op)["status"] == "unclaimed"


def test_the_reaper_expires_lapsed_operations_and_skips_locked_jobs(world):
    ops = [claimed(world) for _ in range(3)]
    fresh = claimed(world)
    now = datetime.now(UTC) + timedelta(seconds=LAPSE_WAIT)
    # Keep the fresh one's lease alive past `now`.
    with world.database.session() as session:
        session.execute(
            sa.text("UPDATE operations SET lease_expire_time = :t WHERE id = :id"),
            {"t": now + timedelta(minutes=5), "id": fresh["id"]},
        )
    locked_job = ops[2]["metadata"]["job_id"]
    with world.database.sessionmaker() as holder:
        holder.execute(sa.select(Job).where(Job.id == locked_job).with_for_update())
        with world.database.session() as session:
            first = reap(session, now=now, limit=1)
        with world.database.session() as session:
            second = reap(session, now=now)
        holder.rollback()
    assert first == [ops[0]["id"]]
    assert second == [ops[1]["id"]]
    with world.database.session() as session:
        assert reap(session, now=now) == [ops[2]["id"]]
    for op in ops:
        stored = operation(world, op["id"])
        assert (stored["metadata"]["state"], stored["error"]["code"]) == ("expired", "DEADLINE_EXCEEDED")
        assert job_of(world, op)["status"] == "unclaimed"
    assert operation(world, fresh["id"])["metadata"]["state"] == "running"


# --- a cancel request whose holder goes silent -----------------------------------------------------------


def _assert_canceled_by_lapse(stored: dict) -> None:
    assert (stored["done"], stored["metadata"]["state"], stored["result"]) == (True, "canceled", None)
    assert stored["error"]["code"] == "CANCELLED"
    assert "lease lapsed after the cancel request" in stored["error"]["message"]
    assert stored["metadata"]["paused"] is False
    assert stored["expire_time"] is not None


def _request_cancel(world: World, op: dict) -> None:
    response = world.client.post(f"/operations/{op['id']}:cancel", headers=world.admin)
    assert response.status_code == 200, response.text
    assert (response.json()["done"], response.json()["metadata"]["cancel_requested"]) == (False, True)


def test_a_cancel_request_that_lapses_ends_canceled_when_the_next_claim_meets_it(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    _request_cancel(world, op)
    time.sleep(LAPSE_WAIT)
    taken = claim(world.client, world.site_f, job_id)
    assert taken.status_code == 201, taken.text
    # The canceled attempt was given back: the new claim is attempt 1 again.
    assert taken.json()["metadata"]["attempt"] == 1
    _assert_canceled_by_lapse(operation(world, op["id"]))
    job = job_of(world, op)
    assert (job["status"], job["attempts"]) == ("claimed", 1)


def test_a_cancel_request_that_lapses_ends_canceled_on_the_late_heartbeat(world):
    op = claimed(world)
    _request_cancel(world, op)
    time.sleep(LAPSE_WAIT)
    late = world.client.patch(
        f"/operations/{op['id']}", json={"metadata": {"progress": 90}}, headers=world.site_e
    )
    assert late.status_code == 409
    # The 409 kept the ending.
    _assert_canceled_by_lapse(operation(world, op["id"]))
    job = job_of(world, op)
    assert (job["status"], job["attempts"]) == ("unclaimed", 0)


def test_the_reaper_ends_a_lapsed_cancel_request_canceled_and_the_attempt_does_not_count(world):
    job = new_job(world)
    assert job["max_attempts"] == 2
    first = claimed(world, job=job)
    time.sleep(LAPSE_WAIT)
    second = claimed(world, world.site_f, job=job)
    assert second["metadata"]["attempt"] == 2
    _request_cancel(world, second)
    time.sleep(LAPSE_WAIT)
    with world.database.session() as session:
        assert reap(session, now=datetime.now(UTC)) == [second["id"]]
    assert operation(world, first["id"])["metadata"]["state"] == "expired"
    _assert_canceled_by_lapse(operation(world, second["id"]))
    # The last attempt ended canceled, not expired: the job is offered again instead of failing.
    after = job_of(world, first)
    assert (after["status"], after["attempts"]) == ("unclaimed", 1)
    assert claim(world.client, world.site_e, job["id"]).status_code == 201


def test_a_canceled_job_whose_holder_goes_silent_ends_canceled_and_stays_canceled(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    canceled = world.client.post(f"/jobs/{job_id}:cancel", headers=world.admin)
    assert canceled.status_code == 200
    assert operation(world, op["id"])["metadata"]["cancel_requested"] is True
    time.sleep(LAPSE_WAIT)
    with world.database.session() as session:
        assert reap(session, now=datetime.now(UTC)) == [op["id"]]
    _assert_canceled_by_lapse(operation(world, op["id"]))
    job = job_of(world, op)
    assert (job["status"], job["attempts"]) == ("canceled", 0)
    assert claim(world.client, world.site_f, job_id).status_code == 409


def test_a_paused_operation_with_a_cancel_request_lapses_though_the_holder_heartbeats(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    assert world.client.post(f"/operations/{op['id']}:pause", headers=world.admin).status_code == 200
    _request_cancel(world, op)
    claimed_lease = datetime.fromisoformat(op["metadata"]["lease_expire_time"])

    # The holder keeps heartbeating while paused; after a cancel request that no longer renews its lease.
    time.sleep(0.1)
    beat = world.client.patch(f"/operations/{op['id']}", json={"metadata": {"p": 1}}, headers=world.site_e)
    assert beat.status_code == 200, beat.text
    meta = beat.json()["metadata"]
    assert (meta["state"], meta["paused"], meta["cancel_requested"]) == ("paused", True, True)
    assert datetime.fromisoformat(meta["lease_expire_time"]) == claimed_lease

    # The pause does not keep the cancel request waiting: the lease lapses, and the next heartbeat is late.
    time.sleep(LAPSE_WAIT)
    late = world.client.patch(f"/operations/{op['id']}", json={}, headers=world.site_e)
    assert late.status_code == 409, late.text
    _assert_canceled_by_lapse(operation(world, op["id"]))
    assert claim(world.client, world.site_f, job_id).status_code == 201
    assert job_of(world, op)["attempts"] == 1


def test_a_paused_operation_with_a_cancel_request_is_found_by_the_reaper(world):
    paused_only = claimed(world)
    both = claimed(world)
    for op in (paused_only, both):
        assert world.client.post(f"/operations/{op['id']}:pause", headers=world.admin).status_code == 200
    _request_cancel(world, both)
    time.sleep(LAPSE_WAIT)
    with world.database.session() as session:
        assert reap(session, now=datetime.now(UTC)) == [both["id"]]
    _assert_canceled_by_lapse(operation(world, both["id"]))
    assert job_of(world, both)["status"] == "unclaimed"
    assert operation(world, paused_only["id"])["metadata"]["state"] == "paused"
    assert claim(world.client, world.site_f, paused_only["metadata"]["job_id"]).status_code == 409


# --- lease lengths: the workflow's, the claim's, renewed by the operation's own --------------------------


def _lease_of(op: dict) -> float:
    meta = op["metadata"]
    return (
        datetime.fromisoformat(meta["lease_expire_time"]) - datetime.fromisoformat(op["update_time"])
    ).total_seconds()


@pytest.fixture
def default_world(client, clean_database, admin_headers, settings) -> World:
    """Claims with the server's default lease (NMDC_CLAIM_LEASE_SECONDS: 300 in the tests' settings)."""
    return make_world(client, clean_database, admin_headers, settings)


def test_a_workflows_lease_seconds_gives_its_claims_that_lease(default_world):
    world = default_world
    create_workflow(world, "assembly", lease_seconds=3600)
    op = claimed(world, job=new_job(world, "assembly"))
    assert op["metadata"]["lease_seconds"] == 3600
    assert _lease_of(op) == pytest.approx(3600, abs=1)
    # Without one, the server's default, as before.
    default = claimed(world)
    assert default["metadata"]["lease_seconds"] == 300
    assert _lease_of(default) == pytest.approx(300, abs=1)


def test_a_claim_may_ask_for_a_shorter_lease_and_heartbeats_renew_by_it(default_world):
    world = default_world
    create_workflow(world, "assembly", lease_seconds=3600)
    response = claim(world.client, world.site_e, new_job(world, "assembly")["id"], lease_seconds=120)
    assert response.status_code == 201, response.text
    op = response.json()
    assert (op["metadata"]["lease_seconds"], round(_lease_of(op))) == (120, 120)
    beat = world.client.patch(
        f"/operations/{op['id']}", json={"metadata": {"progress": 5}}, headers=world.site_e
    )
    assert beat.status_code == 200
    assert round(_lease_of(beat.json())) == 120
    # A site sending the server's keys back changes nothing.
    echoed = world.client.patch(
        f"/operations/{op['id']}",
        json={"metadata": {**beat.json()["metadata"], "lease_seconds": 99999}},
        headers=world.site_e,
    )
    assert echoed.status_code == 200
    assert echoed.json()["metadata"]["lease_seconds"] == 120


def test_a_claim_asking_for_more_than_the_workflow_allows_is_422_and_claims_nothing(default_world):
    world = default_world
    create_workflow(world, "assembly", lease_seconds=3600)
    job = new_job(world, "assembly")
    too_long = claim(world.client, world.site_e, job["id"], lease_seconds=3601)
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "lease_seconds"]
    # The default applies to workflows without a lease of their own.
    over_default = claim(world.client, world.site_e, new_job(world)["id"], lease_seconds=301)
    assert over_default.status_code == 422
    for bad in (0, -5, "60", 1.5):
        assert claim(world.client, world.site_e, job["id"], lease_seconds=bad).status_code == 422
    assert job_of(world, {"metadata": {"job_id": job["id"]}})["status"] == "unclaimed"
    assert claim(world.client, world.site_e, job["id"]).status_code == 201


def test_workflow_lease_seconds_is_bounded_by_the_server_and_may_be_reset(default_world, settings):
    world = default_world
    too_long = {"id": "long", "name": "l", "version": "1", "lease_seconds": settings.max_lease_seconds + 1}
    response = world.client.post("/workflows", json=too_long, headers=world.admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "lease_seconds"]
    create_workflow(world, "assembly", lease_seconds=3600)
    patched = world.client.patch(
        "/workflows/assembly", json={"lease_seconds": settings.max_lease_seconds + 1}, headers=world.admin
    )
    assert patched.status_code == 422
    reset = world.client.patch("/workflows/assembly", json={"lease_seconds": None}, headers=world.admin)
    assert reset.status_code == 200
    assert reset.json()["lease_seconds"] is None
    assert claimed(world, job=new_job(world, "assembly"))["metadata"]["lease_seconds"] == 300


def test_an_admins_cancel_of_the_job_ends_a_lapsed_operation_canceled_not_expired(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    time.sleep(LAPSE_WAIT)
    response = world.client.post(f"/jobs/{job_id}:cancel", headers=world.admin)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["attempts"]) == ("canceled", 0)
    stored = operation(world, op["id"])
    assert (stored["metadata"]["state"], stored["error"]["code"]) == ("canceled", "CANCELLED")
