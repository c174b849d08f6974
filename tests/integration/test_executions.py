"""Executions: recorded under an active claim, outputs registered as data resources, read by anyone."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from nmdc_runtime.config import Settings
from nmdc_runtime.domain.executions import MAX_DETAILS_KEYS
from nmdc_runtime.models import DataResource, Execution
from tests.integration.claim_world import (
    claimed,
    data_resource_body,
    execution_body,
    finish_with_result,
    make_world,
    new_job,
    post_execution,
)

MAX_DETAILS_BYTES = Settings.model_fields["max_metadata_bytes"].default


@pytest.fixture
def world(client, clean_database, admin_headers, settings):
    return make_world(client, clean_database, admin_headers, settings)


def executions_url(op):
    return f"/jobs/{op['metadata']['job_id']}/executions"


def test_posting_an_execution_registers_its_outputs_as_data_resources_of_the_site(world):
    op = claimed(world)
    response = post_execution(world, op, outputs=2)
    assert response.status_code == 201, response.text
    execution = response.json()
    assert execution["job_id"] == op["metadata"]["job_id"]
    assert execution["site_id"] == "site-e"
    assert execution["operation_id"] == op["id"]
    assert execution["workflow_id"] == "wf"
    assert execution["status"] == "succeeded"
    assert execution["details"] == {"exit_code": 0}
    outputs = execution["outputs"]
    assert len(outputs) == 2
    for output in outputs:
        assert output["site_id"] == "site-e"
        assert output["data_type"] == "contigs"
        fetched = world.client.get(f"/data_resources/{output['id']}", headers=world.site_d)
        assert fetched.status_code == 200
        assert fetched.json() == output
    with world.database.session() as session:
        made_by = session.scalars(
            sa.select(DataResource.execution_id).where(DataResource.id.in_([o["id"] for o in outputs]))
        ).all()
    assert made_by == [execution["id"]] * 2


def test_outputs_are_validated_like_posted_data_resources_and_nothing_is_kept(world):
    op = claimed(world)
    bad_outputs = [
        data_resource_body() | {"url": "ftp://x.example.org/a"},
        data_resource_body() | {"size": -1},
        data_resource_body() | {"checksums": [{"type": "sha256", "checksum": "abc"}]},
        data_resource_body() | {"site_id": "site-d"},
    ]
    for output in bad_outputs:
        body = execution_body(op["id"]) | {"outputs": [data_resource_body(), output]}
        response = world.client.post(executions_url(op), json=body, headers=world.site_e)
        assert response.status_code == 422, output
        assert response.json()["detail"][0]["loc"][:3] == ["body", "outputs", 1]
    body = execution_body(op["id"])
    body["ended_at"], body["started_at"] = body["started_at"], body["ended_at"]
    assert world.client.post(executions_url(op), json=body, headers=world.site_e).status_code == 422
    with world.database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(DataResource)) == 1


def test_only_the_holder_posts_executions(world):
    op = claimed(world)
    assert post_execution(world, op, world.site_f).status_code == 403
    for headers in (world.admin, world.user):
        response = world.client.post(executions_url(op), json=execution_body(op["id"]), headers=headers)
        assert response.status_code == 403
    assert world.client.post(executions_url(op), json=execution_body(op["id"])).status_code == 401
    response = world.client.post(
        "/jobs/job-nope/executions", json=execution_body(op["id"]), headers=world.site_e
    )
    assert response.status_code == 404


def test_without_an_active_claim_posting_conflicts(world):
    op = claimed(world)
    finish_with_result(world, op)
    assert post_execution(world, op).status_code == 409
    released = claimed(world)
    world.client.post(f"/jobs/{released['metadata']['job_id']}:release", headers=world.site_e)
    assert post_execution(world, released).status_code == 409


def test_an_operation_of_another_job_is_422(world):
    op = claimed(world)
    other = claimed(world)
    body = execution_body(other["id"])
    response = world.client.post(executions_url(op), json=body, headers=world.site_e)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "operation_id"]
    body = execution_body("op-nope")
    assert world.client.post(executions_url(op), json=body, headers=world.site_e).status_code == 422


def test_idempotency_key_replays_the_first_answer_and_creates_nothing_more(world):
    op = claimed(world)
    body = execution_body(op["id"], outputs=1)
    headers = {**world.site_e, "Idempotency-Key": "exec-attempt-1"}
    first = world.client.post(executions_url(op), json=body, headers=headers)
    again = world.client.post(executions_url(op), json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    different = world.client.post(executions_url(op), json=execution_body(op["id"]), headers=headers)
    assert different.status_code == 422
    with world.database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(DataResource)) == 2


def test_a_replay_shows_the_execution_as_first_reported(world):
    """docs/api.md: the answer as it was, not the execution as corrected since."""
    op = claimed(world)
    body = execution_body(op["id"], outputs=1)
    headers = {**world.site_e, "Idempotency-Key": "exec-attempt-1"}
    first = world.client.post(executions_url(op), json=body, headers=headers)
    corrected = world.client.patch(
        f"{executions_url(op)}/{first.json()['id']}",
        json={"details": {"note": "fixed"}},
        headers=world.site_e,
    )
    assert corrected.status_code == 200 and corrected.json()["details"]["note"] == "fixed"
    again = world.client.post(executions_url(op), json=body, headers=headers)
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()


def test_list_and_get_executions(world):
    op = claimed(world)
    ids = [post_execution(world, op, outputs=0).json()["id"] for _ in range(3)]
    for headers in (world.user, world.site_d, world.admin):
        listed = world.client.get(executions_url(op), params={"max_page_size": 2}, headers=headers).json()
        assert [e["id"] for e in listed["resources"]] == ids[:2]
        token = listed["next_page_token"]
        rest = world.client.get(executions_url(op), params={"page_token": token}, headers=headers).json()
        assert [e["id"] for e in rest["resources"]] == ids[2:]
        assert rest["next_page_token"] is None
        one = world.client.get(f"{executions_url(op)}/{ids[1]}", headers=headers)
        assert one.status_code == 200
        assert one.json()["id"] == ids[1]
    assert world.client.get(executions_url(op)).status_code == 401
    assert world.client.get(f"{executions_url(op)}/exec-nope", headers=world.user).status_code == 404
    assert world.client.get("/jobs/job-nope/executions", headers=world.user).status_code == 404
    other_job = new_job(world)
    assert (
        world.client.get(f"/jobs/{other_job['id']}/executions/{ids[0]}", headers=world.user).status_code
        == 404
    )


def test_details_are_capped_when_posted_and_when_merged_and_a_refusal_changes_nothing(world):
    op = claimed(world)
    over = {"log": "x" * MAX_DETAILS_BYTES}
    response = post_execution(world, op, details=over)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "details"]
    with world.database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 0
    half = "x" * (MAX_DETAILS_BYTES // 2)
    execution = post_execution(world, op, details={"log": half}).json()
    url = f"{executions_url(op)}/{execution['id']}"
    # Each PATCH is small enough; the merge is not (twelve of them once made one GET return 10.8 MB).
    for details in ({"more": half}, {f"k{i}": i for i in range(MAX_DETAILS_KEYS)}):
        response = world.client.patch(url, json={"details": details}, headers=world.site_e)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "details"]
    stored = world.client.get(url, headers=world.site_e).json()
    assert stored["details"] == {"log": half}
    room = world.client.patch(url, json={"details": {"log": None, "more": half}}, headers=world.site_e)
    assert room.status_code == 200, room.text
    assert room.json()["details"] == {"more": half}


def test_patch_by_the_executing_site_while_its_operation_is_open(world):
    op = claimed(world)
    execution = post_execution(world, op).json()
    url = f"{executions_url(op)}/{execution['id']}"
    response = world.client.patch(
        url, json={"status": "failed", "details": {"stderr": "oom", "exit_code": None}}, headers=world.site_e
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "failed"
    assert response.json()["details"] == {"stderr": "oom"}
    assert world.client.patch(url, json={"details": {}}, headers=world.site_f).status_code == 403
    assert world.client.patch(url, json={"details": {}}, headers=world.admin).status_code == 403
    assert world.client.patch(url, json={"details": {}}, headers=world.user).status_code == 403
    assert world.client.patch(url, json={"status": None}, headers=world.site_e).status_code == 422
    assert (
        world.client.patch(url, json={"ended_at": "1999-01-01T00:00:00Z"}, headers=world.site_e).status_code
        == 422
    )
    assert (
        world.client.patch(f"{executions_url(op)}/exec-nope", json={}, headers=world.site_e).status_code
        == 404
    )
    # Once its operation has ended the execution is final.
    world.client.patch(
        f"/operations/{op['id']}", json={"done": True, "error": {"code": "INTERNAL"}}, headers=world.site_e
    )
    assert world.client.patch(url, json={"details": {"late": True}}, headers=world.site_e).status_code == 409
