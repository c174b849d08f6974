"""Waiting requests across real API processes: woken through PostgreSQL LISTEN/NOTIFY by a job another process
made, by the data resources sensor's jobs and by a lapsed lease; SIGTERM answers every waiter and the process
exits within 5 s.

Two uvicorn processes on this run's database serve the first test (about 7 s to start them, 6 s of test); the
shutdown test starts and stops one of its own (about 6 s in all)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import httpx
import psutil
import pytest

from nmdc_runtime.config import Settings
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.data_resources import data_resources_sensor
from nmdc_runtime.db import Database
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.store import accounts as accounts_store
from tests.dagster.conftest import tick
from tests.integration.claim_world import data_resource_body, headers_for, site_principal
from tests.processes import live_api

pytestmark = pytest.mark.e2e


class Stack(NamedTuple):
    a: str
    b: str


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two API processes on this run's database."""
    with (
        live_api(settings, tmp_path_factory.mktemp("api_a")) as a,
        live_api(settings, tmp_path_factory.mktemp("api_b")) as b,
    ):
        yield Stack(a, b)


class World(NamedTuple):
    admin: dict[str, str]
    site_d: dict[str, str]
    site_e: dict[str, str]
    site_f: dict[str, str]


@pytest.fixture
def world(settings: Settings, clean_database: Database, stack: Stack) -> World:
    """Sites D (data), E and F (executing), an admin, and workflow `wf` on `fastq` (made through process B)."""
    with clean_database.session() as session:
        for site_id in ("site-d", "site-e", "site-f"):
            accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=[])
    world = World(
        admin=headers_for(settings, Principal(kind="user", name="admin", admin=True)),
        site_d=headers_for(settings, site_principal("site-d")),
        site_e=headers_for(settings, site_principal("site-e")),
        site_f=headers_for(settings, site_principal("site-f")),
    )
    body = {"id": "wf", "name": "wf", "version": "1", "data_types": ["fastq"]}
    assert httpx.post(stack.b + "/workflows", json=body, headers=world.admin).status_code == 201
    return world


def _waiting(url: str, headers: dict[str, str], **body) -> tuple[ThreadPoolExecutor, object]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(
        httpx.post, url + "/jobs:claimNext", json={"wait_seconds": 20, **body}, headers=headers, timeout=30
    )
    return pool, future


def _job(stack: Stack, world: World) -> dict:
    """A job made by hand through process B."""
    dr = httpx.post(stack.b + "/data_resources", json=data_resource_body(), headers=world.site_d).json()
    made = httpx.post(
        stack.b + "/jobs", json={"workflow_id": "wf", "data_resource_ids": [dr["id"]]}, headers=world.admin
    )
    assert made.status_code == 201, made.text
    return made.json()


def _woken(waiting, wake) -> tuple[httpx.Response, float]:
    """Once the waiter waits (its first look found nothing), `wake()`; its answer, and how long after."""
    time.sleep(1)
    assert not waiting.done()
    wake()
    woken_at = time.monotonic()
    answer = waiting.result(timeout=10)
    return answer, time.monotonic() - woken_at


def test_a_waiter_is_woken_across_processes_by_a_job_made_elsewhere_the_sensor_s_jobs_and_a_lapsed_lease(
    stack, world, settings
):
    """One test for the three, so that the two processes start once (pytest-xdist would start them for each
    worker that runs a test of this module)."""
    # A job the data resources sensor makes (its tick evaluated here, as the daemon evaluates it); first, so
    # that the tick makes this one job only (the jobs made by hand below have data resources of their own).
    registered = httpx.post(stack.b + "/data_resources", json=data_resource_body(), headers=world.site_d)
    registered.raise_for_status()
    pool, waiting = _waiting(stack.a, world.site_e)
    with pool:
        answer, after = _woken(waiting, lambda: tick(data_resources_sensor, RuntimeDatabase(settings)))
    assert answer.status_code == 201 and after < 1
    assert answer.json()["job"]["created_by"].startswith("dagster:sensor:data_resources_sensor")

    # A job made by hand through the other process.
    pool, waiting = _waiting(stack.a, world.site_e)
    with pool:
        made = {}
        answer, after = _woken(waiting, lambda: made.update(_job(stack, world)))
    assert answer.status_code == 201 and answer.json()["job"]["id"] == made["id"]
    assert after < 1

    # A lease that lapses: nothing notifies it; the process's sweep (every 2 s) finds it.
    job = _job(stack, world)
    held = httpx.post(stack.b + f"/jobs/{job['id']}:claim", json={"lease_seconds": 1}, headers=world.site_f)
    assert held.status_code == 201
    lapses_at = time.monotonic() + 1
    pool, waiting = _waiting(stack.a, world.site_e)
    with pool:
        answer = waiting.result(timeout=10)
    assert time.monotonic() - lapses_at < 3.5
    assert answer.status_code == 201 and answer.json()["job"]["id"] == job["id"]
    assert answer.json()["metadata"]["attempt"] == 2


def test_sigterm_answers_100_waiters_at_once_and_the_process_exits_within_5_s(
    settings: Settings, clean_database: Database, tmp_path: Path
):
    with clean_database.session() as session:
        for site_id in ("site-e", "site-p"):
            accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=[])
    waiter = headers_for(settings, site_principal("site-e"))
    probe = headers_for(settings, site_principal("site-p"))
    with live_api(settings, tmp_path, NMDC_MAX_WAITERS="100", NMDC_MAX_WAITERS_PER_SITE="100") as url:
        server = psutil.Process(url.pid)

        async def run() -> tuple[list[int], float]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

                async def wait() -> httpx.Response:
                    # A probe may hold a place for a second: a waiter it kept out tries again.
                    while True:
                        answer = await client.post(
                            "/jobs:claimNext", json={"wait_seconds": 60}, headers=waiter
                        )
                        if answer.status_code != 429:
                            return answer
                        await asyncio.sleep(0.05)

                waiters = [asyncio.create_task(wait()) for _ in range(100)]
                # All 100 wait once the process's bound refuses one more.
                deadline = time.monotonic() + 60
                while (
                    await client.post("/jobs:claimNext", json={"wait_seconds": 1}, headers=probe)
                ).status_code != 429:
                    assert time.monotonic() < deadline, "the 100 waiters never all waited"
                    await asyncio.sleep(0.5)
                os.kill(url.pid, signal.SIGTERM)
                sent = time.monotonic()
                answers = await asyncio.gather(*waiters)
                while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
                    await asyncio.sleep(0.05)
                return [answer.status_code for answer in answers], time.monotonic() - sent

        statuses, took = asyncio.run(run())
    assert statuses == [204] * 100
    assert took < 5
    assert "stopping: answering 100 waiting request(s)" in (tmp_path / "api.log").read_text()
