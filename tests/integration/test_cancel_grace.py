"""A cancel cuts data off: once an admin asks to cancel an operation (or its job), its holder gets no more
access grants, its heartbeats no longer renew its lease, and it ends `canceled` within the cancel's grace
however it heartbeats; a result posted within the grace still counts, and grants given before stay valid until
their own expiry. The grace is one second here (`NMDC_CANCEL_GRACE_SECONDS`, 60 by default)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.integration.claim_world import World, claimed, finish_with_result, make_world, operation
from tests.integration.test_grants import access, bearer, grant_of, input_of, verifier

GRACE = 1


@pytest.fixture
def world(settings, clean_database, admin_headers) -> Iterator[World]:
    with TestClient(create_app(settings.model_copy(update={"cancel_grace_seconds": GRACE}))) as client:
        yield make_world(client, clean_database, admin_headers, settings)


def _heartbeat(world: World, op: dict):
    return world.client.patch(
        f"/operations/{op['id']}", json={"metadata": {"progress": 1}}, headers=world.site_e
    )


@pytest.mark.parametrize("canceled", ["operation", "job"])
def test_a_cancel_refuses_grants_at_once_and_ends_the_operation_within_the_grace_despite_heartbeats(
    world, canceled
):
    op = claimed(world)
    dr = input_of(op, world)
    before = grant_of(access(world, world.site_e, dr))
    path = (
        f"/operations/{op['id']}:cancel"
        if canceled == "operation"
        else f"/jobs/{op['metadata']['job_id']}:cancel"
    )
    requested = datetime.now(UTC)
    assert world.client.post(path, headers=world.admin).status_code == 200

    refused = access(world, world.site_e, dr)
    assert refused.status_code == 403, refused.text
    assert "no cancel requested" in refused.json()["detail"]
    # The data site still accepts the grant given before: it is checked when a download starts, and lives
    # until its own expiry.
    assert verifier(world.client, "site-d").check(bearer(before), {dr})["data_resource_id"] == dr

    # The holder keeps heartbeating: it learns of the request, and its lease stays where the grace ends.
    while True:
        beat = _heartbeat(world, op)
        if beat.status_code != 200:
            break
        meta = beat.json()["metadata"]
        assert meta["cancel_requested"] is True
        assert datetime.fromisoformat(meta["lease_expire_time"]) <= requested + timedelta(seconds=GRACE + 0.5)
        assert datetime.now(UTC) < requested + timedelta(seconds=GRACE + 1), "the lease outlived the grace"
        time.sleep(0.2)
    assert beat.status_code == 409, beat.text
    ended = operation(world, op["id"])
    assert (ended["metadata"]["state"], ended["error"]["code"]) == ("canceled", "CANCELLED")
    assert datetime.fromisoformat(ended["update_time"]) <= requested + timedelta(seconds=GRACE + 1)
    assert access(world, world.site_e, dr).status_code == 403


def test_a_result_posted_within_the_grace_counts(world):
    op = claimed(world)
    assert world.client.post(f"/operations/{op['id']}:cancel", headers=world.admin).status_code == 200
    finished = finish_with_result(world, op)
    assert (finished["metadata"]["state"], finished["done"]) == ("succeeded", True)
    job = world.client.get(f"/jobs/{op['metadata']['job_id']}", headers=world.admin).json()
    assert job["status"] == "succeeded"
