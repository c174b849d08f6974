"""Who may call each mutating endpoint of claims, operations and executions: the expected status for every
caller, each on a fresh job that site E holds. A refused call changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.integration.claim_world import (
    World,
    claimed,
    execution_body,
    make_world,
    operation,
    post_execution,
)

CALLERS = ("anonymous", "other_site", "holding_site", "plain_user", "admin")


@dataclass
class Case:
    method: str
    path: str
    body: dict | None
    expected: dict[str, int]


def _headers(world: World, caller: str) -> dict[str, str]:
    return {
        "anonymous": {},
        "other_site": world.site_f,
        "holding_site": world.site_e,
        "plain_user": world.user,
        "admin": world.admin,
    }[caller]


def _case(name: str, op: dict, execution_id: str) -> Case:
    job_id = op["metadata"]["job_id"]
    op_id = op["id"]
    return {
        "claim": Case(
            "POST",
            f"/jobs/{job_id}:claim",
            None,
            dict(other_site=409, holding_site=200, plain_user=403, admin=403),
        ),
        "release": Case(
            "POST",
            f"/jobs/{job_id}:release",
            None,
            dict(other_site=404, holding_site=200, plain_user=403, admin=403),
        ),
        "cancel_job": Case(
            "POST",
            f"/jobs/{job_id}:cancel",
            None,
            dict(other_site=403, holding_site=403, plain_user=403, admin=200),
        ),
        "patch_operation": Case(
            "PATCH",
            f"/operations/{op_id}",
            {"metadata": {"progress": 1}},
            dict(other_site=403, holding_site=200, plain_user=403, admin=200),
        ),
        "cancel_operation": Case(
            "POST",
            f"/operations/{op_id}:cancel",
            None,
            dict(other_site=403, holding_site=200, plain_user=403, admin=200),
        ),
        "pause_operation": Case(
            "POST",
            f"/operations/{op_id}:pause",
            None,
            dict(other_site=403, holding_site=403, plain_user=403, admin=200),
        ),
        "resume_operation": Case(
            "POST",
            f"/operations/{op_id}:resume",
            None,
            dict(other_site=403, holding_site=403, plain_user=403, admin=200),
        ),
        "post_execution": Case(
            "POST",
            f"/jobs/{job_id}/executions",
            execution_body(op_id),
            dict(other_site=403, holding_site=201, plain_user=403, admin=403),
        ),
        "patch_execution": Case(
            "PATCH",
            f"/jobs/{job_id}/executions/{execution_id}",
            {"details": {"x": 1}},
            dict(other_site=403, holding_site=200, plain_user=403, admin=403),
        ),
    }[name]


ENDPOINTS = (
    "claim",
    "release",
    "cancel_job",
    "patch_operation",
    "cancel_operation",
    "pause_operation",
    "resume_operation",
    "post_execution",
    "patch_execution",
)


@pytest.fixture
def world(client, clean_database, admin_headers, settings):
    return make_world(client, clean_database, admin_headers, settings)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_who_may_call(world, endpoint):
    got, want = {}, {}
    for caller in CALLERS:
        op = claimed(world)
        execution = post_execution(world, op)
        assert execution.status_code == 201
        case = _case(endpoint, op, execution.json()["id"])
        want[caller] = 401 if caller == "anonymous" else case.expected[caller]
        response = world.client.request(
            case.method, case.path, json=case.body, headers=_headers(world, caller)
        )
        got[caller] = response.status_code
        if got[caller] >= 400:
            after = operation(world, op["id"])
            assert after["done"] is False, (caller, after)
            assert after["metadata"]["cancel_requested"] is False
            assert after["metadata"]["paused"] is False
            assert after["metadata"].get("progress") is None
    assert got == want
