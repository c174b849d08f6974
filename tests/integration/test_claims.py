"""POST /jobs/{id}:claim, :cancel and :release against a real database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from nmdc_runtime.domain.errors import Conflict
from nmdc_runtime.domain.operations import start_operation
from nmdc_runtime.store import operations as operations_store
from tests.integration.claim_world import (
    claim,
    claimed,
    create_workflow,
    finish_with_result,
    job_of,
    make_world,
    new_job,
    operation,
)


@pytest.fixture
def world(client, clean_database, admin_headers, settings):
    return make_world(client, clean_database, admin_headers, settings)


def test_claim_creates_an_operation_with_the_documented_shape(world):
    job = new_job(world)
    response = claim(world.client, world.site_e, job["id"])
    assert response.status_code == 201
    op = response.json()
    assert set(op) == {
        "id",
        "done",
        "result",
        "error",
        "metadata",
        "create_time",
        "update_time",
        "expire_time",
    }
    assert (op["done"], op["result"], op["error"], op["expire_time"]) == (False, None, None, None)
    meta = op["metadata"]
    assert meta["job_id"] == job["id"]
    assert meta["site_id"] == "site-e"
    assert meta["workflow_id"] == "wf"
    assert meta["attempt"] == 1
    assert meta["state"] == "running"
    assert meta["cancel_requested"] is False
    assert meta["paused"] is False
    assert meta["lease_expire_time"].endswith("Z")
    lease = datetime.fromisoformat(meta["lease_expire_time"])
    created = datetime.fromisoformat(op["create_time"])
    assert (lease - created).total_seconds() == pytest.approx(300, abs=1)
    after = job_of(world, op)
    assert (after["status"], after["attempts"]) == ("claimed", 1)


def test_a_retried_claim_by_the_holder_returns_the_same_operation_with_200(world):
    op = claimed(world)
    again = claim(world.client, world.site_e, op["metadata"]["job_id"])
    assert again.status_code == 200
    assert again.json()["id"] == op["id"]
    assert job_of(world, op)["attempts"] == 1


def test_another_sites_claim_conflicts(world):
    op = claimed(world)
    response = claim(world.client, world.site_f, op["metadata"]["job_id"])
    assert response.status_code == 409
    assert "another site" in response.json()["detail"]


def test_unknown_job_is_404(world):
    assert claim(world.client, world.site_e, "job-nope").status_code == 404


def test_missing_capability_is_403(world):
    create_workflow(world, "gpu-wf", required=["gpu"])
    job = new_job(world, "gpu-wf")
    response = claim(world.client, world.site_d, job["id"])
    assert response.status_code == 403
    assert "gpu" in response.json()["detail"]
    assert claim(world.client, world.site_e, job["id"]).status_code == 201


def test_only_site_clients_claim(world):
    job = new_job(world)
    assert claim(world.client, world.admin, job["id"]).status_code == 403
    assert claim(world.client, world.user, job["id"]).status_code == 403
    assert world.client.post(f"/jobs/{job['id']}:claim").status_code == 401


def test_a_succeeded_job_cannot_be_claimed(world):
    op = claimed(world)
    finish_with_result(world, op)
    assert job_of(world, op)["status"] == "succeeded"
    for headers in (world.site_e, world.site_f):
        assert claim(world.client, headers, op["metadata"]["job_id"]).status_code == 409


def test_released_job_is_claimable_again_and_the_release_is_not_an_attempt(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    response = world.client.post(f"/jobs/{job_id}:release", headers=world.site_e)
    assert response.status_code == 200
    job = response.json()
    assert (job["id"], job["status"], job["attempts"]) == (job_id, "unclaimed", 0)
    ended = operation(world, op["id"])
    assert ended["done"] is True
    assert ended["metadata"]["state"] == "canceled"
    assert ended["error"]["code"] == "CANCELLED"
    assert ended["result"] is None
    assert ended["expire_time"] is not None
    second = claim(world.client, world.site_f, job_id)
    assert second.status_code == 201
    assert second.json()["metadata"]["attempt"] == 1


def test_release_without_an_active_claim_is_404(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    assert world.client.post(f"/jobs/{job_id}:release", headers=world.site_f).status_code == 404
    assert world.client.post("/jobs/job-nope:release", headers=world.site_e).status_code == 404
    unclaimed = new_job(world)
    assert world.client.post(f"/jobs/{unclaimed['id']}:release", headers=world.site_e).status_code == 404
    assert world.client.post(f"/jobs/{job_id}:release", headers=world.site_e).status_code == 200
    assert world.client.post(f"/jobs/{job_id}:release", headers=world.site_e).status_code == 404


def test_a_release_with_a_reason_keeps_it_on_the_error_and_gives_the_attempt_back(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    reason = {"code": "SITE_FAULT", "message": "the command's executable is missing"}
    response = world.client.post(f"/jobs/{job_id}:release", headers=world.site_e, json={"reason": reason})
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["attempts"]) == ("unclaimed", 0)
    ended = operation(world, op["id"])
    assert ended["metadata"]["state"] == "canceled"
    assert ended["error"]["code"] == "CANCELLED"
    assert ended["error"]["details"] == {"reason": reason}
    # Queryable where the site-draining rules look for it.
    with world.database.engine.connect() as conn:
        codes = (
            conn.execute(
                sa.text("SELECT error -> 'details' -> 'reason' ->> 'code' FROM operations WHERE id = :id"),
                {"id": op["id"]},
            )
            .scalars()
            .all()
        )
    assert codes == ["SITE_FAULT"]


@pytest.mark.parametrize(
    "body",
    [
        {"reason": {"code": "BORED", "message": "x"}},
        {"reason": {"code": "SITE_FAULT", "message": "x" * 1025}},
        {"reason": {"code": "SITE_FAULT", "extra": 1}},
        {"reason": "SITE_FAULT"},
        {"why": {"code": "SITE_FAULT"}},
    ],
    ids=["unknown-code", "long-message", "unknown-field", "not-an-object", "no-reason"],
)
def test_a_release_with_a_bad_reason_is_422_and_releases_nothing(world, body):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    response = world.client.post(f"/jobs/{job_id}:release", headers=world.site_e, json=body)
    assert response.status_code == 422, response.text
    assert operation(world, op["id"])["done"] is False
    assert job_of(world, op)["status"] == "claimed"


def test_a_shutdown_release_and_a_bodiless_one_are_alike_but_for_the_reason(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    body = {"reason": {"code": "SHUTDOWN", "message": "SIGTERM"}}
    assert world.client.post(f"/jobs/{job_id}:release", headers=world.site_e, json=body).status_code == 200
    ended = operation(world, op["id"])
    assert ended["error"]["details"] == {"reason": {"code": "SHUTDOWN", "message": "SIGTERM"}}
    assert job_of(world, op)["attempts"] == 0


def test_admin_cancel_of_an_unclaimed_job(world):
    job = new_job(world)
    response = world.client.post(f"/jobs/{job['id']}:cancel", headers=world.admin)
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert claim(world.client, world.site_e, job["id"]).status_code == 409
    # Canceling again changes nothing.
    assert world.client.post(f"/jobs/{job['id']}:cancel", headers=world.admin).json()["status"] == "canceled"


def test_admin_cancel_of_a_claimed_job_requests_cancellation_and_the_job_stays_canceled(world):
    op = claimed(world)
    job_id = op["metadata"]["job_id"]
    assert world.client.post(f"/jobs/{job_id}:cancel", headers=world.admin).json()["status"] == "canceled"
    # The holder learns it on its next heartbeat ...
    beat = world.client.patch(
        f"/operations/{op['id']}", json={"metadata": {"progress": 40}}, headers=world.site_e
    )
    assert beat.status_code == 200
    assert beat.json()["metadata"]["cancel_requested"] is True
    # ... and finishes with CANCELLED; the job stays canceled.
    done = world.client.patch(
        f"/operations/{op['id']}",
        json={"done": True, "error": {"code": "CANCELLED", "message": "asked to stop"}},
        headers=world.site_e,
    )
    assert done.status_code == 200
    assert done.json()["metadata"]["state"] == "canceled"
    assert job_of(world, op)["status"] == "canceled"


def test_cancel_of_a_finished_job_conflicts_and_cancel_needs_an_admin(world):
    op = claimed(world)
    finish_with_result(world, op)
    job_id = op["metadata"]["job_id"]
    assert world.client.post(f"/jobs/{job_id}:cancel", headers=world.admin).status_code == 409
    other = new_job(world)
    assert world.client.post(f"/jobs/{other['id']}:cancel", headers=world.site_e).status_code == 403
    assert world.client.post(f"/jobs/{other['id']}:cancel", headers=world.user).status_code == 403
    assert world.client.post("/jobs/job-nope:cancel", headers=world.admin).status_code == 404


def test_claimable_listing_drops_a_claimed_job(world):
    job = new_job(world)
    listed = world.client.get("/jobs", params={"claimable": "true"}, headers=world.site_f).json()
    assert job["id"] in [j["id"] for j in listed["resources"]]
    claimed(world, job=job)
    listed = world.client.get("/jobs", params={"claimable": "true"}, headers=world.site_f).json()
    assert job["id"] not in [j["id"] for j in listed["resources"]]


def test_a_second_open_operation_is_translated_to_a_conflict(world):
    op = claimed(world)
    with world.database.session() as session:
        job = operations_store.lock_job_or_404(session, job_id=op["metadata"]["job_id"])
        # Bypass the claim's checks: the partial unique index still refuses a second open operation.
        second = start_operation(job, site_id="site-f", now=datetime.now(UTC), lease_seconds=60)
        with pytest.raises(Conflict):
            operations_store.insert_operation(session, **second)
        session.rollback()
    assert job_of(world, op)["attempts"] == 1
