"""Claims racing: many threads, and two API processes on one database; at most one claim per job wins."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from nmdc_runtime.models import Job, Operation
from nmdc_runtime.store import accounts as accounts_store
from tests.integration.claim_world import headers_for, make_world, new_job, site_principal
from tests.processes import live_api

THREADS = 16
SITES = 8
JOBS = 5


@pytest.fixture
def world(client, clean_database, admin_headers, settings):
    return make_world(client, clean_database, admin_headers, settings)


def _racers(world, settings) -> list[tuple[str, dict[str, str]]]:
    with world.database.session() as session:
        for n in range(SITES):
            accounts_store.create_site(session, site_id=f"racer-{n}", name=f"Racer {n}", capabilities=["gpu"])
    return [(f"racer-{n}", headers_for(settings, site_principal(f"racer-{n}"))) for n in range(SITES)]


def _race(post, racers, job_ids) -> dict[str, list[tuple[str, int, str | None]]]:
    """Every thread claims every job (in its own random order) at once; (site, status, op id) per job."""
    start = threading.Barrier(THREADS)
    results: dict[str, list[tuple[str, int, str | None]]] = defaultdict(list)
    lock = threading.Lock()

    def run(n: int) -> None:
        site_id, headers = racers[n % len(racers)]
        order = list(job_ids)
        random.Random(n).shuffle(order)
        start.wait(timeout=60)
        for job_id in order:
            response = post(n, f"/jobs/{job_id}:claim", headers)
            op_id = response.json().get("id") if response.status_code in (200, 201) else None
            with lock:
                results[job_id].append((site_id, response.status_code, op_id))

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(run, n) for n in range(THREADS)]:
            future.result()
    return results


def _check(world, results, job_ids) -> None:
    for job_id in job_ids:
        outcomes = results[job_id]
        assert len(outcomes) == THREADS
        codes = [code for _, code, _ in outcomes]
        assert all(code < 500 for code in codes), codes
        assert codes.count(201) == 1, codes
        assert set(codes) <= {200, 201, 409}, codes
        winner, _, op_id = next(o for o in outcomes if o[1] == 201)
        for site_id, code, other_op in outcomes:
            if code == 200:
                # Only the winner's own retries see the operation again.
                assert (site_id, other_op) == (winner, op_id)
            if code == 409:
                assert site_id != winner
    with world.database.session() as session:
        for job_id in job_ids:
            ops = session.scalars(sa.select(Operation).where(Operation.job_id == job_id)).all()
            assert len(ops) == 1
            job = session.get(Job, job_id)
            assert (job.status, job.attempts) == ("claimed", 1)


def test_threads_racing_to_claim_through_the_api(world, settings):
    racers = _racers(world, settings)
    job_ids = [new_job(world)["id"] for _ in range(JOBS)]
    results = _race(lambda _n, path, headers: world.client.post(path, headers=headers), racers, job_ids)
    _check(world, results, job_ids)


@pytest.mark.e2e
def test_two_api_processes_racing_on_one_database(world, settings, tmp_path):
    racers = _racers(world, settings)
    job_ids = [new_job(world)["id"] for _ in range(JOBS)]
    with (
        live_api(settings, tmp_path / "home-0") as first,
        live_api(settings, tmp_path / "home-1") as second,
    ):
        # Thread n talks to process n % 2, so every job is raced from both processes.
        clients = [httpx.Client(base_url=(first, second)[n % 2], timeout=60) for n in range(THREADS)]
        try:
            results = _race(lambda n, path, headers: clients[n].post(path, headers=headers), racers, job_ids)
        finally:
            for http in clients:
                http.close()
    _check(world, results, job_ids)
