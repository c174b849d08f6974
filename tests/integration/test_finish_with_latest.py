"""`PATCH /operations/{id}` with `done: true` alone, and the metadata cap as a setting (NMDC_MAX_METADATA_BYTES).

NMDC's own site software finishes an operation with `{"done": true, "metadata": ...}` and nothing else, after
posting its execution: the latest execution under the operation decides how it ends.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.integration.claim_world import (
    claimed,
    execution_body,
    job_of,
    make_world,
    operation,
    post_execution,
)


@pytest.fixture
def world(client, clean_database, admin_headers, settings):
    return make_world(client, clean_database, admin_headers, settings)


def _finish_alone(world, op, **extra):
    return world.client.patch(f"/operations/{op['id']}", json={"done": True, **extra}, headers=world.site_e)


def test_done_alone_after_a_succeeded_execution_ends_with_it_as_the_result(world):
    op = claimed(world)
    post_execution(world, op, status="failed")  # an earlier try, superseded
    latest = post_execution(world, op, status="succeeded").json()
    response = _finish_alone(world, op, metadata={"message": "all done"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["done"], body["error"]) == (True, None)
    assert body["result"]["id"] == latest["id"] and body["metadata"]["state"] == "succeeded"
    assert body["metadata"]["message"] == "all done"
    assert job_of(world, op)["status"] == "succeeded"


def test_done_alone_after_a_failed_execution_ends_failed_naming_it(world):
    op = claimed(world)
    post_execution(world, op, status="succeeded")
    latest = post_execution(world, op, status="failed").json()
    response = _finish_alone(world, op)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] is None and body["metadata"]["state"] == "failed"
    assert body["error"]["code"] == "EXECUTION_FAILED"
    assert latest["id"] in body["error"]["message"]
    assert body["error"]["details"] == {"execution_id": latest["id"]}
    # A failure counts the attempt like any other: the job is claimable again (two attempts in this world).
    assert job_of(world, op)["status"] in ("unclaimed", "failed")


def test_done_alone_without_an_execution_is_422_and_changes_nothing(world):
    op = claimed(world)
    other = claimed(world)
    # An execution under another operation does not count for this one.
    assert post_execution(world, other).status_code == 201
    response = _finish_alone(world, op)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "done"]
    assert "POST /jobs/{job_id}/executions" in detail["msg"] and "result" in detail["msg"]
    assert operation(world, op["id"])["done"] is False


def test_the_metadata_and_details_cap_is_a_setting_named_in_the_answer(world, settings):
    op = claimed(world)
    small = settings.model_copy(update={"max_metadata_bytes": 2048})
    # The same database and signing key: the world's tokens work on this app too.
    with TestClient(create_app(small)) as capped:
        url = f"/operations/{op['id']}"
        assert (
            capped.patch(url, json={"metadata": {"log": "x" * 1900}}, headers=world.site_e).status_code == 200
        )
        response = capped.patch(url, json={"metadata": {"more": "y" * 200}}, headers=world.site_e)
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "metadata"]
        assert "at most 2048" in detail["msg"] and "NMDC_MAX_METADATA_BYTES" in detail["msg"]
        executions = f"/jobs/{op['metadata']['job_id']}/executions"
        body = execution_body(op["id"], details={"log": "z" * 2100})
        response = capped.post(executions, json=body, headers=world.site_e)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "details"]
        assert "NMDC_MAX_METADATA_BYTES" in response.json()["detail"][0]["msg"]
        body = execution_body(op["id"], details={"log": "z" * 1900})
        assert capped.post(executions, json=body, headers=world.site_e).status_code == 201
    # The default app takes what the small one refused: the number is the setting's, not a constant.
    response = world.client.patch(url, json={"metadata": {"more": "y" * 200}}, headers=world.site_e)
    assert response.status_code == 200
