"""The two measured paths: one registration to a claimable job, and a burst of registrations to all jobs."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from bench.devstack import DevStack
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Job, Workflow
from nmdc_runtime.store import accounts

SHA = "c" * 64


@dataclass
class World:
    """Sites with tokens and a workflow, made for one scenario."""

    data_headers: dict[str, str]
    exec_headers: dict[str, str]
    workflow_id: str
    data_type: str
    data_site: str


def make_world(stack: DevStack, tag: str) -> World:
    """A data site, an executing site (with tokens) and an enabled workflow for a data type of its own."""
    data_type = f"bench-{tag}"
    with stack.database.session() as session:
        sites = {}
        for role, caps in (("d", []), ("e", ["bench"])):
            site_id = f"bench-{tag}-{role}"
            accounts.create_site(session, site_id=site_id, name=site_id, capabilities=caps)
            sites[role] = accounts.create_site_client(session, site_id=site_id)
        session.add(
            Workflow(
                id=f"wf-{data_type}",
                name=data_type,
                version="1",
                data_types=[data_type],
                required_capabilities=["bench"],
                config={"bench": tag},
            )
        )
    headers = {}
    for role, (client, secret) in sites.items():
        response = httpx.post(
            stack.api_url + "/token",
            data={"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret},
            timeout=10,
        )
        response.raise_for_status()
        headers[role] = {"Authorization": f"Bearer {response.json()['access_token']}"}
    return World(headers["d"], headers["e"], f"wf-{data_type}", data_type, f"bench-{tag}-d")


def _body(world: World, i: int) -> dict[str, Any]:
    return {
        "name": f"sample-{i}.fastq.gz",
        "url": f"https://data.example.org/{world.data_type}/sample-{i}.fastq.gz",
        "data_type": world.data_type,
        "size": 1000 + i,
        "checksums": [{"type": "sha256", "checksum": SHA}],
    }


@dataclass
class LatencyResult:
    samples: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        s = sorted(self.samples)
        return {
            "n": len(s),
            "median_s": round(statistics.median(s), 2),
            "p90_s": round(s[int(0.9 * (len(s) - 1))], 2),
            "min_s": round(s[0], 2),
            "max_s": round(s[-1], 2),
            "samples_s": [round(x, 2) for x in self.samples],
        }


def latency(stack: DevStack, *, samples: int, seed: int = 1) -> LatencyResult:
    """Register one data resource over the API, poll `GET /jobs?claimable=true` (every 0.1 s) until its job shows.

    A random pause (0-5 s) between samples spreads registrations over the sensor loop's 5-second phase.
    """
    world = make_world(stack, f"lat{int(time.time())}")
    rng = random.Random(seed)
    result = LatencyResult()
    with httpx.Client(base_url=stack.api_url, timeout=10) as http:
        for i in range(samples):
            time.sleep(rng.uniform(0, 5))
            start = time.monotonic()
            response = http.post("/data_resources", json=_body(world, i), headers=world.data_headers)
            response.raise_for_status()
            dr_id = response.json()["id"]
            while True:
                page = http.get(
                    "/jobs",
                    params={"claimable": "true", "data_resource_id": dr_id},
                    headers=world.exec_headers,
                )
                page.raise_for_status()
                if page.json()["resources"]:
                    break
                if time.monotonic() - start > 120:
                    raise RuntimeError(f"no job for {dr_id} after 120 s")
                time.sleep(0.1)
            result.samples.append(time.monotonic() - start)
            print(f"  latency sample {i + 1}/{samples}: {result.samples[-1]:.2f} s", flush=True)
    return result


def _unclaimed(stack: DevStack, workflow_id: str) -> int:
    with stack.database.session() as session:
        return session.scalar(
            sa.select(sa.func.count())
            .select_from(Job)
            .where(Job.workflow_id == workflow_id, Job.status == "unclaimed")
        )


def _count_claimable_over_api(stack: DevStack, world: World) -> int:
    total, token = 0, None
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        while True:
            params = {"claimable": "true", "workflow_id": world.workflow_id, "max_page_size": 1000}
            if token:
                params["page_token"] = token
            page = http.get("/jobs", params=params, headers=world.exec_headers)
            page.raise_for_status()
            body = page.json()
            total += len(body["resources"])
            token = body["next_page_token"]
            if token is None:
                return total


def _wait_all(stack: DevStack, world: World, n: int, start: float, timeout: float) -> float:
    while True:
        done = _unclaimed(stack, world.workflow_id)
        if done >= n:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"only {done}/{n} jobs after {timeout:.0f} s")
        time.sleep(0.1)


def burst_database(stack: DevStack, *, n: int, timeout: float = 300) -> dict[str, Any]:
    """Insert `n` data resources in one transaction (as a bulk registration lands); time until all jobs exist.

    Measures the sensor's side alone: the clock starts when the rows commit.
    """
    world = make_world(stack, f"bulk{int(time.time())}")
    rows = [
        {
            "id": new_id("dr"),
            "site_id": world.data_site,
            **{k: v for k, v in _body(world, i).items()},
        }
        for i in range(n)
    ]
    with stack.database.session() as session:
        session.execute(sa.insert(DataResource), rows)
    start = time.monotonic()
    elapsed = _wait_all(stack, world, n, start, timeout)
    claimable = _count_claimable_over_api(stack, world)
    return {"n": n, "all_jobs_claimable_s": round(elapsed, 2), "claimable_over_api": claimable}


def burst_api(stack: DevStack, *, n: int, concurrency: int = 16, timeout: float = 600) -> dict[str, Any]:
    """POST `n` data resources over the API with `concurrency` clients; time from the first POST until all
    `n` jobs exist, and how long the POSTs themselves took."""
    world = make_world(stack, f"api{int(time.time())}")

    async def register() -> float:
        queue = iter(range(n))
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=60, limits=httpx.Limits(max_connections=concurrency)
        ) as http:

            async def worker() -> None:
                for i in queue:
                    response = await http.post(
                        "/data_resources", json=_body(world, i), headers=world.data_headers
                    )
                    response.raise_for_status()

            began = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.monotonic() - began

    start = time.monotonic()
    posting = asyncio.run(register())
    elapsed = _wait_all(stack, world, n, start, timeout)
    claimable = _count_claimable_over_api(stack, world)
    return {
        "n": n,
        "concurrency": concurrency,
        "posts_took_s": round(posting, 2),
        "first_post_to_all_jobs_claimable_s": round(elapsed, 2),
        "after_last_post_s": round(elapsed - posting, 2),
        "claimable_over_api": claimable,
    }
