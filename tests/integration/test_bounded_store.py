"""One holder cannot flood the store, nor a reader the API: executions per operation are capped
(`NMDC_MAX_EXECUTIONS_PER_OPERATION`) on both paths of the execution and under concurrent requests, and every
list page is bounded by bytes as well as by count (`NMDC_MAX_PAGE_BYTES`): it ends early, and its
`next_page_token` continues."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from nmdc_runtime.services import executions as executions_service
from tests.integration.claim_world import (
    World,
    claimed,
    create_workflow,
    execution_body,
    make_world,
    new_job,
    post_execution,
)

CAP = 2
PAGE_BYTES = 100_000
DETAILS = {"log": "x" * 30_000}
"""About 30 KB an execution: three fit in a page, four do not."""


@pytest.fixture
def world(settings, clean_database, admin_headers) -> Iterator[World]:
    bounded = settings.model_copy(update={"max_executions_per_operation": CAP, "max_page_bytes": PAGE_BYTES})
    with TestClient(create_app(bounded)) as client:
        yield make_world(client, clean_database, admin_headers, settings)


def _refused_past_the_cap(response) -> None:
    assert response.status_code == 409, response.text
    assert f"has recorded {CAP} executions" in response.json()["detail"]
    assert f"NMDC_MAX_EXECUTIONS_PER_OPERATION={CAP}" in response.json()["detail"]


def test_a_cap_of_two_executions_holds_and_a_repeat_or_a_correction_still_works(world):
    op = claimed(world)
    keyed, body = {"Idempotency-Key": "first", **world.site_e}, execution_body(op["id"])
    first = world.client.post(f"/jobs/{op['metadata']['job_id']}/executions", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    assert post_execution(world, op).status_code == 201
    _refused_past_the_cap(post_execution(world, op))
    # A repeat creates nothing, so the cap does not refuse it; a correction adds nothing either.
    again = world.client.post(f"/jobs/{op['metadata']['job_id']}/executions", json=body, headers=keyed)
    assert (again.status_code, again.headers.get("Idempotent-Replayed")) == (201, "true")
    corrected = world.client.patch(
        f"/jobs/{op['metadata']['job_id']}/executions/{first.json()['id']}",
        json={"details": {"note": "corrected"}},
        headers=world.site_e,
    )
    assert corrected.status_code == 200, corrected.text
    listed = world.client.get(f"/jobs/{op['metadata']['job_id']}/executions", headers=world.site_e).json()
    assert len(listed["resources"]) == CAP


def test_the_cap_holds_on_the_general_path(world, monkeypatch):
    monkeypatch.setattr(executions_service, "_record_as_holder", lambda *args, **kwargs: None)
    op = claimed(world)
    for _ in range(CAP):
        assert post_execution(world, op).status_code == 201
    _refused_past_the_cap(post_execution(world, op))


def test_the_cap_holds_under_concurrent_requests(world):
    op = claimed(world)
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: post_execution(world, op).status_code, range(8)))
    assert statuses == [201] * CAP + [409] * (8 - CAP)
    listed = world.client.get(f"/jobs/{op['metadata']['job_id']}/executions", headers=world.site_e).json()
    assert len(listed["resources"]) == CAP


def _walk(world: World, path: str, **params) -> list[list[dict]]:
    """Every page of a list, each page's items; each answer no bigger than the bound."""
    pages, token = [], None
    while True:
        response = world.client.get(
            path,
            params={**params, "max_page_size": 1000, **({"page_token": token} if token else {})},
            headers=world.admin,
        )
        assert response.status_code == 200, response.text
        assert len(response.content) <= PAGE_BYTES
        pages.append(response.json()["resources"])
        token = response.json()["next_page_token"]
        if token is None:
            return pages


def test_a_page_of_executions_stops_at_its_byte_bound_and_its_token_continues(world):
    job = new_job(world)
    recorded = []
    for _ in range(4):  # four claims of the job, two executions each
        op = claimed(world, job=job)
        recorded += [post_execution(world, op, details=DETAILS).json()["id"] for _ in range(CAP)]
        released = world.client.post(f"/jobs/{job['id']}:release", headers=world.site_e)
        assert released.status_code == 200, released.text
    pages = _walk(world, f"/jobs/{job['id']}/executions")
    # Three of about 30 KB fit in 100 KB, not four; each comes once, in order.
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [execution["id"] for page in pages for execution in page] == recorded


def test_a_page_of_operations_weighs_their_results_too(world):
    finished = []
    for _ in range(4):
        op = claimed(world)
        execution = post_execution(world, op, details=DETAILS).json()
        done = world.client.patch(
            f"/operations/{op['id']}",
            json={"done": True, "result": {"execution_id": execution["id"]}},
            headers=world.site_e,
        )
        assert done.status_code == 200, done.text
        finished.append(op["id"])
    pages = _walk(world, "/operations", done="true")
    assert [len(page) for page in pages] == [3, 1]
    assert [op["id"] for page in pages for op in page] == finished


def test_the_listings_pages_stop_at_their_byte_bound(world):
    create_workflow(world, "big", config={"reference": "y" * 30_000})
    jobs = [new_job(world, "big")["id"] for _ in range(7)]
    for params in ({}, {"claimable": "true"}):
        headers = world.site_e if params else world.admin
        pages, token = [], None
        while True:
            response = world.client.get(
                "/jobs",
                params={
                    **params,
                    "workflow_id": "big",
                    "max_page_size": 1000,
                    **({"page_token": token} if token else {}),
                },
                headers=headers,
            )
            assert response.status_code == 200, response.text
            assert len(response.content) <= PAGE_BYTES
            pages.append([job["id"] for job in response.json()["resources"]])
            token = response.json()["next_page_token"]
            if token is None:
                break
        assert [len(page) for page in pages] == [3, 3, 1], params
        assert [job for page in pages for job in page] == jobs
