"""Drained sites (`nmdc_runtime.domain.drains`), through the API: faults in a row drain a site, its claims get
the drained 409 and its listing is empty while its open operation goes on, staff or its admin lift the drain;
endings that are not the site's fault drain nothing; and each path that ends an operation judges it (the
trigger of migration 0013).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nmdc_runtime.models import SiteEnding
from nmdc_runtime.services import maintenance as maintenance_service
from nmdc_runtime.store import drains as drains_store
from nmdc_site.client import NmdcClient, SiteDrained
from tests.integration.builders import SERVICE_POLICY, make_user_headers
from tests.integration.claim_world import (
    World,
    claim,
    claimed,
    finish_with_result,
    make_world,
    new_job,
    operation,
    post_execution,
)
from tests.integration.test_cli import run_cli
from tests.integration.test_telemetry import _samples

DRAINED = "SITE_DRAINED"


@pytest.fixture
def world(client, clean_database, admin_headers, settings) -> World:
    return make_world(client, clean_database, admin_headers, settings)


def _fail(world: World, op: dict, code: str = "UNKNOWN", headers=None) -> None:
    response = world.client.patch(
        f"/operations/{op['id']}",
        json={"done": True, "error": {"code": code, "message": "the run failed"}},
        headers=headers or world.site_e,
    )
    assert response.status_code == 200, response.text


def _release(world: World, op: dict, body: dict | None = None) -> None:
    response = world.client.post(f"/jobs/{op['metadata']['job_id']}:release", json=body, headers=world.site_e)
    assert response.status_code == 200, response.text


def _expire(world: World, op: dict) -> None:
    """Have the reaper end `op` as its lease runs out (its clock put just past the lease, not waited for)."""
    lease_end = datetime.fromisoformat(op["metadata"]["lease_expire_time"])
    with world.database.session() as session:
        ended = maintenance_service.reap_lapsed_leases(
            session, now=lease_end + timedelta(seconds=1), policy=SERVICE_POLICY
        )
    assert ended == [op["id"]]


def _site(world: World, site_id: str = "site-e") -> dict:
    response = world.client.get(f"/sites/{site_id}", headers=world.site_f)
    assert response.status_code == 200, response.text
    return response.json()


def _claimable(world: World, headers: dict) -> list[str]:
    response = world.client.get("/jobs", params={"claimable": "true"}, headers=headers)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["resources"]]


def test_three_site_faults_in_a_row_drain_a_site_until_it_is_lifted(world, clean_database):
    still_open = claimed(world)
    first = claimed(world)
    _fail(world, first)  # the holder's PATCH (its fast path)
    second = claimed(world)
    _release(world, second, {"reason": {"code": "SITE_FAULT", "message": "python is not the venv's"}})
    assert _site(world)["drained"] is None
    short = claim(world.client, world.site_e, new_job(world)["id"], lease_seconds=1).json()
    _expire(world, short)  # the reaper

    waiting = new_job(world)
    refused = claim(world.client, world.site_e, waiting["id"])
    assert refused.status_code == 409, refused.text
    assert refused.headers["NMDC-Error-Code"] == DRAINED
    detail = refused.json()["detail"]
    ended = operation(world, short["id"])["update_time"]
    assert detail.startswith(f"site site-e is drained since {ended}")
    assert f"({first['id']}, {second['id']}, {short['id']})" in detail
    # Another site's refusals carry no such header; the drained site's listing is empty, not the others'.
    other = claim(world.client, world.site_f, still_open["metadata"]["job_id"])
    assert other.status_code == 409 and "NMDC-Error-Code" not in other.headers
    assert _claimable(world, world.site_e) == []
    assert waiting["id"] in _claimable(world, world.site_f)
    # POST /jobs:claimNext says so at once, even with a wait and nothing it could claim anyway.
    started = time.monotonic()
    refused_next = world.client.post("/jobs:claimNext", json={"wait_seconds": 30}, headers=world.site_e)
    assert refused_next.status_code == 409, refused_next.text
    assert refused_next.headers["NMDC-Error-Code"] == DRAINED
    assert refused_next.json()["detail"] == detail
    assert time.monotonic() - started < 5
    # The site's client tells it apart from other conflicts, as its agent needs (it waits for the lift).
    site_e = NmdcClient(http=world.client, access_token=world.site_e["Authorization"].removeprefix("Bearer "))
    with pytest.raises(SiteDrained) as told:
        site_e.claim_next(workflow_ids=["wf"])
    assert (told.value.error_code, told.value.detail) == (DRAINED, detail)
    site = _site(world)
    assert site["drained"] == {"since": ended, "operations": [first["id"], second["id"], short["id"]]}
    listed = world.client.get("/sites", headers=world.site_e).json()["resources"]
    assert next(s for s in listed if s["id"] == "site-e")["drained"] == site["drained"]
    assert _drained_sites_gauge(world) == 1

    # Its open operation goes on: a retried claim of it, heartbeats, an execution, the finish.
    assert claim(world.client, world.site_e, still_open["metadata"]["job_id"]).status_code == 200
    beat = world.client.patch(f"/operations/{still_open['id']}", json={}, headers=world.site_e)
    assert beat.status_code == 200, beat.text
    assert post_execution(world, still_open, status="failed").status_code == 201
    _fail(world, still_open, code="UNAVAILABLE")  # neither counts nor resets
    assert _site(world)["drained"] is not None

    # Staff or the site's admin lift it; the site itself, and other users, may not.
    assert world.client.post("/sites/site-e:undrain", headers=world.site_e).status_code == 403
    assert world.client.post("/sites/site-e:undrain", headers=world.user).status_code == 403
    assert world.client.post("/sites/nowhere:undrain", headers=world.admin).status_code == 404
    site_admin = make_user_headers(world.client, clean_database, "alice", site_admin_of=["site-e"])
    lifted = world.client.post("/sites/site-e:undrain", headers=site_admin)
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["drained"] is None
    assert _drained_sites_gauge(world) == 0
    assert waiting["id"] in _claimable(world, world.site_e)
    assert claim(world.client, world.site_e, waiting["id"]).status_code == 201
    # Only operations that end after the undrain count: two more faults do not drain it again.
    for _ in range(2):
        _fail(world, claimed(world))
    assert _site(world)["drained"] is None
    _fail(world, claimed(world))
    assert _site(world)["drained"] is not None


def _drained_sites_gauge(world: World) -> float:
    return _samples(world.client.get("/metrics", headers=world.admin).text)[("nmdc_drained_sites", ())]


def test_endings_that_are_not_the_sites_fault_drain_nothing_and_a_success_resets_the_count(world):
    for _ in range(3):
        _fail(world, claimed(world), code="DATA_LOSS")
    for _ in range(3):
        _fail(world, claimed(world), code="UNAVAILABLE")
    _release(world, claimed(world))
    _release(world, claimed(world), {"reason": {"code": "SHUTDOWN"}})
    for _ in range(3):
        # After an admin's cancel request, a failure is not the site's doing.
        op = claimed(world)
        assert world.client.post(f"/operations/{op['id']}:cancel", headers=world.admin).status_code == 200
        _fail(world, op)
    assert _site(world)["drained"] is None
    assert claim(world.client, world.site_e, new_job(world)["id"]).status_code == 201

    held = claimed(world)
    _fail(world, claimed(world))
    _fail(world, claimed(world))
    finish_with_result(world, claimed(world))
    _fail(world, claimed(world))
    _fail(world, claimed(world))
    assert _site(world)["drained"] is None
    _fail(world, claimed(world))
    assert _site(world)["drained"] is not None
    # A success of an operation it still held resets the count like any other, which lifts the drain.
    finish_with_result(world, held)
    assert _site(world)["drained"] is None


def _judged(world: World, op_id: str) -> bool | None:
    """Whether the ending of `op_id` was noted as a fault (True), a success (False), or not at all (None)."""
    with world.database.session() as session:
        return session.scalar(sa.select(SiteEnding.fault).where(SiteEnding.operation_id == op_id))


def test_every_path_that_ends_an_operation_judges_it(world):
    lapsing = {
        name: claim(world.client, world.site_e, new_job(world)["id"], lease_seconds=1).json()
        for name in ("claim", "heartbeat", "execution", "reaper", "canceled")
    }
    assert (
        world.client.post(f"/operations/{lapsing['canceled']['id']}:cancel", headers=world.admin).status_code
        == 200
    )
    ended = {}

    op = claimed(world)
    _fail(world, op)
    ended[op["id"]] = True  # the holder's PATCH, fast path
    op = claimed(world)
    _fail(world, op, headers=world.admin)
    ended[op["id"]] = True  # an admin's PATCH (the general path)
    op = claimed(world)
    finish_with_result(world, op)
    ended[op["id"]] = False
    op = claimed(world)
    _release(world, op, {"reason": {"code": "SITE_FAULT"}})
    ended[op["id"]] = True
    op = claimed(world)
    _release(world, op)
    ended[op["id"]] = None
    op = claimed(world)
    assert world.client.post(f"/operations/{op['id']}:cancel", headers=world.site_e).status_code == 200
    ended[op["id"]] = None  # the holder's own cancel is a release

    time.sleep(1.1)  # the one-second leases lapse
    assert claim(world.client, world.site_f, lapsing["claim"]["metadata"]["job_id"]).status_code == 201
    assert (
        world.client.patch(
            f"/operations/{lapsing['heartbeat']['id']}", json={}, headers=world.site_e
        ).status_code
        == 409
    )
    assert post_execution(world, lapsing["execution"]).status_code == 409
    with world.database.session() as session:
        reaped = maintenance_service.reap_lapsed_leases(session, now=datetime.now(UTC), policy=SERVICE_POLICY)
    assert set(reaped) == {lapsing["reaper"]["id"], lapsing["canceled"]["id"]}
    for name in ("claim", "heartbeat", "execution", "reaper"):
        assert operation(world, lapsing[name]["id"])["metadata"]["state"] == "expired"
        ended[lapsing[name]["id"]] = True
    assert operation(world, lapsing["canceled"]["id"])["metadata"]["state"] == "canceled"
    ended[lapsing["canceled"]["id"]] = None  # after a cancel request

    assert {op_id: _judged(world, op_id) for op_id in ended} == ended


def test_the_reaper_forgets_what_no_streak_reads(world):
    for _ in range(2):
        _fail(world, claimed(world))
    finish_with_result(world, claimed(world))
    _fail(world, claimed(world))
    with world.database.session() as session:
        before = drains_store.fault_streaks(session, site_ids=["site-e"], drain_after=3)
        assert maintenance_service.prune_site_endings(session) == 2  # the faults before the success
        assert maintenance_service.prune_site_endings(session) == 0
        assert drains_store.fault_streaks(session, site_ids=["site-e"], drain_after=3) == before
        assert session.scalar(sa.select(sa.func.count()).select_from(SiteEnding)) == 2


def test_sites_undrain_on_the_command_line(world, settings, tmp_path):
    for _ in range(3):
        _fail(world, claimed(world))
    assert _site(world)["drained"] is not None
    env = {"NMDC_DATABASE_URL": settings.database_url, "NMDC_HOME": str(tmp_path / "home")}
    result = run_cli(["sites", "undrain", "site-e"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"site_id": "site-e", "drained": false}'
    assert _site(world)["drained"] is None
