"""GET, PATCH, :cancel, :pause and :resume of operations against a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nmdc_runtime.config import Settings
from nmdc_runtime.domain.operations import MAX_METADATA_KEYS
from nmdc_runtime.models import Execution, Operation
from nmdc_runtime.services.maintenance import delete_finished_operations
from tests.integration.claim_world import (
    claim,
    claimed,
    finish_with_result,
    job_of,
    make_world,
    new_job,
    operation,
    post_execution,
    register_data,
)

MAX_METADATA_BYTES = Settings.model_fields["max_metadata_bytes"].default


@pytest.fixture
def world(client, clean_database, admin_headers, settings):
    return make_world(client, clean_database, admin_headers, settings)


def patch(world, op, body, headers=None):
    return world.client.patch(f"/operations/{op['id']}", json=body, headers=headers or world.site_e)


# --- reading ---------------------------------------------------------------------------------------------


def test_get_unknown_operation_is_404_and_reading_needs_a_token(world):
    assert world.client.get("/operations/op-nope", headers=world.user).status_code == 404
    op = claimed(world)
    assert world.client.get(f"/operations/{op['id']}").status_code == 401
    for headers in (world.user, world.site_d, world.site_f):
        assert world.client.get(f"/operations/{op['id']}", headers=headers).json()["id"] == op["id"]


def test_list_filters_and_pages(world):
    shared = register_data(world)
    first = claimed(world, job=new_job(world, data_resource_ids=[shared["id"]]))
    second = claimed(world, world.site_f)
    third = claimed(world, job=new_job(world, data_resource_ids=[shared["id"]]))
    finish_with_result(world, third)

    def ids(**params):
        response = world.client.get("/operations", params=params, headers=world.user)
        assert response.status_code == 200, response.text
        return [op["id"] for op in response.json()["resources"]]

    assert ids() == [first["id"], second["id"], third["id"]]
    assert ids(site_id="site-f") == [second["id"]]
    assert ids(site_id="site-e") == [first["id"], third["id"]]
    assert ids(job_id=first["metadata"]["job_id"]) == [first["id"]]
    assert ids(workflow_id="wf") == [first["id"], second["id"], third["id"]]
    assert ids(workflow_id="other") == []
    assert ids(data_resource_id=shared["id"]) == [first["id"], third["id"]]
    assert ids(done="true") == [third["id"]]
    assert ids(done="false") == [first["id"], second["id"]]

    seen, token = [], None
    while True:
        params = {"max_page_size": 2, **({"page_token": token} if token else {})}
        body = world.client.get("/operations", params=params, headers=world.user).json()
        seen += [op["id"] for op in body["resources"]]
        token = body["next_page_token"]
        if token is None:
            break
    assert seen == [first["id"], second["id"], third["id"]]
    assert (
        world.client.get("/operations", params={"page_token": "junk"}, headers=world.user).status_code == 422
    )


def test_listed_finished_operation_carries_its_execution(world):
    op = claimed(world)
    finished = finish_with_result(world, op)
    listed = world.client.get("/operations", params={"done": "true"}, headers=world.site_d).json()[
        "resources"
    ]
    assert listed == [finished]
    result = finished["result"]
    assert result["job_id"] == op["metadata"]["job_id"]
    assert result["site_id"] == "site-e"
    assert result["operation_id"] == op["id"]
    assert len(result["outputs"]) == 1


# --- heartbeats and metadata ---------------------------------------------------------------------------


def test_heartbeat_renews_the_lease_and_merges_metadata(world):
    op = claimed(world)
    first = patch(world, op, {"metadata": {"progress": 10, "stage": "download", "host": "n1"}})
    assert first.status_code == 200
    meta = first.json()["metadata"]
    assert (meta["progress"], meta["stage"], meta["host"]) == (10, "download", "n1")
    assert meta["lease_expire_time"] >= op["metadata"]["lease_expire_time"]
    # Existing clients send the whole metadata back with their additions: fine.
    whole = {**meta, "progress": 55.5, "stage": None, "message": "assembling"}
    second = patch(world, op, {"metadata": whole})
    assert second.status_code == 200, second.text
    meta = second.json()["metadata"]
    assert (meta["progress"], meta["message"], meta["host"]) == (55.5, "assembling", "n1")
    assert "stage" not in meta
    assert meta["state"] == "running"
    assert second.json()["update_time"] >= first.json()["update_time"]


@pytest.mark.parametrize(
    ("key", "value"), [("job_id", "job-x"), ("site_id", "site-f"), ("workflow_id", "x"), ("attempt", 7)]
)
def test_changing_a_read_only_metadata_key_is_422(world, key, value):
    op = claimed(world)
    response = patch(world, op, {"metadata": {key: value}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", f"metadata.{key}"]
    assert operation(world, op["id"])["metadata"][key] == op["metadata"][key]


def test_server_keys_sent_back_are_ignored(world):
    op = claimed(world)
    response = patch(
        world, op, {"metadata": {"state": "succeeded", "paused": True, "cancel_requested": True}}
    )
    meta = response.json()["metadata"]
    assert (meta["state"], meta["paused"], meta["cancel_requested"]) == ("running", False, False)


@pytest.mark.parametrize(
    "body",
    [
        {"metadata": {"progress": 150}},
        {"metadata": "not an object"},
        {"done": True},
        {"done": False, "error": {"code": "INTERNAL"}},
        {"done": True, "error": {"code": "lower case"}},
        {"done": True, "error": {"code": "INTERNAL"}, "result": {"execution_id": "exec-1"}},
        {"unknown": 1},
    ],
)
def test_invalid_patches_are_422_and_change_nothing(world, body):
    op = claimed(world)
    response = patch(world, op, body)
    assert response.status_code == 422, response.text
    assert operation(world, op["id"])["done"] is False


def test_metadata_is_capped_in_keys_and_bytes_and_a_refused_patch_changes_nothing(world):
    op = claimed(world)
    half = MAX_METADATA_BYTES // 2
    assert patch(world, op, {"metadata": {"log": "x" * half}}).status_code == 200
    for body in (
        # Each PATCH is small enough; the merge is not.
        {"metadata": {"more": "y" * half}},
        {"metadata": {f"k{i}": i for i in range(MAX_METADATA_KEYS)}},
    ):
        response = patch(world, op, body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "metadata"]
        stored = operation(world, op["id"])
        assert "more" not in stored["metadata"] and "k0" not in stored["metadata"]
        assert stored["metadata"]["log"] == "x" * half
    # Dropping a key makes room; the holder's heartbeat still renews the lease meanwhile.
    room = patch(world, op, {"metadata": {"log": None, "more": "y" * half}})
    assert room.status_code == 200, room.text
    assert "log" not in room.json()["metadata"]


# --- finishing ------------------------------------------------------------------------------------------


def test_finishing_with_a_result_succeeds_the_job_and_freezes_the_operation(world):
    op = claimed(world)
    finished = finish_with_result(world, op)
    assert finished["done"] is True
    assert finished["error"] is None
    assert finished["metadata"]["state"] == "succeeded"
    assert finished["expire_time"] is not None
    assert job_of(world, op)["status"] == "succeeded"
    for body in ({"metadata": {"progress": 1}}, {"done": True, "error": {"code": "INTERNAL"}}):
        assert patch(world, op, body).status_code == 409
    assert patch(world, op, {"metadata": {}}, headers=world.admin).status_code == 409
    assert operation(world, op["id"]) == finished


def test_a_result_must_be_a_succeeded_execution_of_this_job_by_the_holder(world):
    op = claimed(world)
    other = claimed(world, world.site_f)
    foreign = post_execution(world, other, world.site_f).json()
    failed = post_execution(world, op, status="failed").json()
    for execution_id in ("exec-nope", foreign["id"], failed["id"]):
        response = patch(world, op, {"done": True, "result": {"execution_id": execution_id}})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "result.execution_id"]
    assert operation(world, op["id"])["done"] is False


def test_a_result_without_done_still_finishes(world):
    op = claimed(world)
    execution = post_execution(world, op).json()
    response = patch(world, op, {"result": {"execution_id": execution["id"]}})
    assert response.status_code == 200
    assert response.json()["done"] is True


def test_finishing_with_an_error_frees_the_job_until_attempts_run_out(world):
    job = new_job(world)
    for attempt in (1, 2, 3):
        holder = world.site_e if attempt % 2 else world.site_f
        op = claimed(world, holder, job=job)
        assert op["metadata"]["attempt"] == attempt
        response = patch(
            world,
            op,
            {"done": True, "error": {"code": "INTERNAL", "message": "boom", "details": {"rc": 1}}},
            holder,
        )
        assert response.status_code == 200
        assert response.json()["error"] == {"code": "INTERNAL", "message": "boom", "details": {"rc": 1}}
        assert response.json()["metadata"]["state"] == "failed"
        after = job_of(world, op)
        assert after["attempts"] == attempt
        assert after["status"] == ("failed" if attempt == 3 else "unclaimed")
    assert claim(world.client, world.site_e, job["id"]).status_code == 409


def test_an_error_with_code_cancelled_gives_the_attempt_back(world):
    op = claimed(world)
    response = patch(world, op, {"done": True, "error": {"code": "CANCELLED", "message": "stopping"}})
    assert response.json()["metadata"]["state"] == "canceled"
    job = job_of(world, op)
    assert (job["status"], job["attempts"]) == ("unclaimed", 0)


def test_another_site_and_plain_users_may_not_patch_but_an_admin_may(world):
    op = claimed(world)
    assert patch(world, op, {"metadata": {"x": 1}}, world.site_f).status_code == 403
    assert patch(world, op, {"metadata": {"x": 1}}, world.user).status_code == 403
    before = operation(world, op["id"])["metadata"]["lease_expire_time"]
    by_admin = patch(world, op, {"metadata": {"note": "checked"}}, world.admin)
    assert by_admin.status_code == 200
    # An admin's PATCH is not the holder's heartbeat.
    assert by_admin.json()["metadata"]["lease_expire_time"] == before
    assert by_admin.json()["metadata"]["note"] == "checked"
    done = patch(world, op, {"done": True, "error": {"code": "ABORTED", "message": "by staff"}}, world.admin)
    assert done.status_code == 200
    assert done.json()["metadata"]["state"] == "failed"
    assert world.client.patch("/operations/op-nope", json={}, headers=world.site_e).status_code == 404


# --- cancel, pause, resume ------------------------------------------------------------------------------


def test_holder_cancel_releases_the_job(world):
    op = claimed(world)
    response = world.client.post(f"/operations/{op['id']}:cancel", headers=world.site_e)
    assert response.status_code == 200
    body = response.json()
    assert (body["done"], body["metadata"]["state"], body["error"]["code"]) == (True, "canceled", "CANCELLED")
    job = job_of(world, op)
    assert (job["status"], job["attempts"]) == ("unclaimed", 0)
    assert world.client.post(f"/operations/{op['id']}:cancel", headers=world.site_e).status_code == 409


def test_admin_cancel_requests_and_the_holder_finishes(world):
    op = claimed(world)
    response = world.client.post(f"/operations/{op['id']}:cancel", headers=world.admin)
    assert response.status_code == 200
    assert response.json()["done"] is False
    assert response.json()["metadata"]["cancel_requested"] is True
    beat = patch(world, op, {"metadata": {"progress": 70}})
    assert beat.json()["metadata"]["cancel_requested"] is True
    done = patch(world, op, {"done": True, "error": {"code": "CANCELLED", "message": "as asked"}})
    assert done.json()["metadata"]["state"] == "canceled"
    assert job_of(world, op)["status"] == "unclaimed"


def test_cancel_by_another_site_or_a_user_is_403(world):
    op = claimed(world)
    assert world.client.post(f"/operations/{op['id']}:cancel", headers=world.site_f).status_code == 403
    assert world.client.post(f"/operations/{op['id']}:cancel", headers=world.user).status_code == 403
    assert world.client.post("/operations/op-nope:cancel", headers=world.admin).status_code == 404


def test_pause_and_resume(world):
    op = claimed(world)
    paused = world.client.post(f"/operations/{op['id']}:pause", headers=world.admin)
    assert paused.status_code == 200
    meta = paused.json()["metadata"]
    assert (meta["state"], meta["paused"]) == ("paused", True)
    assert world.client.post(f"/operations/{op['id']}:pause", headers=world.admin).json()["metadata"][
        "paused"
    ]
    beat = patch(world, op, {"metadata": {"progress": 5}})
    assert beat.json()["metadata"]["paused"] is True
    resumed = world.client.post(f"/operations/{op['id']}:resume", headers=world.admin)
    meta = resumed.json()["metadata"]
    assert (meta["state"], meta["paused"]) == ("running", False)
    for action in ("pause", "resume"):
        assert world.client.post(f"/operations/{op['id']}:{action}", headers=world.site_e).status_code == 403
        assert world.client.post(f"/operations/{op['id']}:{action}", headers=world.user).status_code == 403
    finish_with_result(world, op)
    assert world.client.post(f"/operations/{op['id']}:pause", headers=world.admin).status_code == 409
    assert world.client.post(f"/operations/{op['id']}:resume", headers=world.admin).status_code == 409


# --- retention ------------------------------------------------------------------------------------------


def test_finished_operations_are_deleted_after_retention_and_executions_are_kept(world):
    op = claimed(world)
    finished = finish_with_result(world, op)
    still_open = claimed(world)
    expire_time = datetime.fromisoformat(finished["expire_time"])
    with world.database.session() as session:
        assert delete_finished_operations(session, now=expire_time - timedelta(seconds=1)) == 0
    with world.database.session() as session:
        assert delete_finished_operations(session, now=expire_time + timedelta(seconds=1)) == 1
    assert world.client.get(f"/operations/{op['id']}", headers=world.user).status_code == 404
    assert operation(world, still_open["id"])["done"] is False
    execution_id = finished["result"]["id"]
    response = world.client.get(
        f"/jobs/{op['metadata']['job_id']}/executions/{execution_id}", headers=world.user
    )
    assert response.status_code == 200
    with world.database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(Operation)) == 1


def test_delete_respects_its_limit(world):
    for _ in range(3):
        finish_with_result(world, claimed(world))
    later = datetime.now(UTC) + timedelta(days=365)
    with world.database.session() as session:
        assert delete_finished_operations(session, now=later, limit=2) == 2
    with world.database.session() as session:
        assert delete_finished_operations(session, now=later) == 1


def test_finishing_needs_an_execution_recorded_under_this_operation(world):
    first = claimed(world)
    earlier = post_execution(world, first)
    assert earlier.status_code == 201
    # The site gives the job back and claims it again: the earlier execution belongs to the earlier claim.
    assert world.client.post(f"/operations/{first['id']}:cancel", headers=world.site_e).status_code == 200
    second = claimed(world, job={"id": first["metadata"]["job_id"]})
    response = patch(world, second, {"done": True, "result": {"execution_id": earlier.json()["id"]}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "result.execution_id"]


def test_the_patch_that_finishes_does_not_renew_the_lease(world):
    op = claimed(world)
    execution = post_execution(world, op).json()
    done = patch(world, op, {"done": True, "result": {"execution_id": execution["id"]}})
    assert done.status_code == 200
    assert done.json()["metadata"]["lease_expire_time"] == op["metadata"]["lease_expire_time"]


def test_outcome_and_times_name_their_fields_and_times_come_back_in_utc(world):
    op = claimed(world)
    both = patch(world, op, {"done": True, "result": {"execution_id": "x"}, "error": {"code": "INTERNAL"}})
    assert both.status_code == 422
    assert ["body", "error"] in [e["loc"] for e in both.json()["detail"]]
    backwards = post_execution(
        world, op, started_at="2030-01-01T12:00:00+00:00", ended_at="2030-01-01T11:00:00+00:00"
    )
    assert backwards.status_code == 422
    assert ["body", "ended_at"] in [e["loc"] for e in backwards.json()["detail"]]
    offset = post_execution(
        world, op, started_at="2030-01-01T12:00:00+02:00", ended_at="2030-01-01T12:30:00+02:00"
    )
    assert offset.status_code == 201
    assert (offset.json()["started_at"], offset.json()["ended_at"]) == (
        "2030-01-01T10:00:00Z",
        "2030-01-01T10:30:00Z",
    )
