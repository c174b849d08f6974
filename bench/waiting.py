"""Sites that wait on the server (`POST /jobs:claimNext`): how soon a waiting site gets a new job, what a
thousand waiting requests cost an API worker, and a herd of sites draining a queue through `:claimNext` beside
the same herd listing then claiming.

- **job to claim**: a site waits in `:claimNext` (on `make dev`'s API, two workers); an admin makes a job
  (`POST /jobs`); the time from the job's `created_at` (the start of the transaction that made it, so a little
  before its commit) to the moment the waiting site has the claim's answer. The clocks are one machine's.
- **1,000 waiters**: an API process of one uvicorn worker (as `make dev` starts its workers) gets 1,000
  `:claimNext` requests waiting 60 s (10 each of 100 sites, under the per-site bound); its resident memory
  (VmRSS) before and once all wait, and the CPU it and PostgreSQL use over `idle_seconds` while they wait.
- **herd**: 50 sites drain 1,000 unclaimed jobs on `make dev`'s API, each with one request at a time: by
  listing (`GET /jobs?claimable=true`, the first page) then claiming the first it can (409: the next), as the
  seed's agent does; and by `:claimNext`. Claims per second from the first request to the last claim, the 409s,
  and whether each job was claimed once. The rounds alternate, `repeats` of each, medians reported. The client
  is Python (httpx, one asyncio loop): its CPU competes with the API's for the same cores in both rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

from bench import history
from bench.devstack import DevStack
from bench.paths import api_env, busiest_processes, serve
from nmdc_runtime.auth import issue_token
from nmdc_runtime.config import Settings
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.models import Job, Operation, Site, Workflow


@dataclass(frozen=True)
class WaitSizes:
    job_to_claim_samples: int = 20
    waiters: int = 1_000
    waiters_per_site: int = 10
    idle_seconds: float = 15.0
    herd_sites: int = 50
    herd_jobs: int = 1_000
    repeats: int = 2
    """Rounds of each way of draining (a list-then-claim round of 50 sites is about 25,000 requests)."""


SMOKE = WaitSizes(job_to_claim_samples=3, waiters=40, idle_seconds=2.0, herd_sites=8, herd_jobs=60, repeats=1)


def _token(stack: DevStack, principal: Principal) -> dict[str, str]:
    """A bearer token for `principal`, signed with the stack's key as POST /token signs them (no argon2 check
    per site: a hundred of them would cost the machine 20 s of CPU)."""
    key = Settings(home=stack.home, database_url=stack.database.url).jwt_key()
    return {"Authorization": f"Bearer {issue_token(principal, key=key, expires_in=3600)}"}


LEASE_SECONDS = 3600
"""The lease of the claims the scenarios make: none lapses (and comes back claimable) while the bench runs."""


def _workflow(stack: DevStack, workflow_id: str, capability: str) -> str:
    with stack.database.session() as session:
        session.add(
            Workflow(
                id=workflow_id,
                name=workflow_id,
                version="1",
                data_types=[],
                required_capabilities=[capability],
                config={},
                lease_seconds=LEASE_SECONDS,
            )
        )
    return workflow_id


def _sites(stack: DevStack, tag: str, n: int, capability: str) -> list[dict[str, str]]:
    """`n` sites with `capability`, and a workflow `wf-<tag>` that requires it; their tokens."""
    with stack.database.session() as session:
        session.add_all(Site(id=f"{tag}-{i}", name=f"{tag}-{i}", capabilities=[capability]) for i in range(n))
    _workflow(stack, f"wf-{tag}", capability)
    return [
        _token(stack, Principal(kind="site_client", name=f"sc-{tag}-{i}", site_id=f"{tag}-{i}"))
        for i in range(n)
    ]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)


# ---- job to claim ----------------------------------------------------------------------------------------


def job_to_claim(stack: DevStack, sizes: WaitSizes) -> dict[str, Any]:
    """A site waiting in `:claimNext`, a job made through the API: milliseconds from the job to the claim."""
    (site,) = _sites(stack, "wait-one", 1, "wait-one")
    admin = _token(stack, Principal(kind="user", name="bench-admin", admin=True))
    latencies = []
    with httpx.Client(base_url=stack.api_url, timeout=60) as client, busiest_processes() as machine:
        for _ in range(sizes.job_to_claim_samples):
            answer: dict[str, Any] = {}

            def wait(answer: dict[str, Any] = answer) -> None:
                response = client.post("/jobs:claimNext", json={"wait_seconds": 30}, headers=site)
                answer["at"] = time.time()
                answer["response"] = response

            waiter = threading.Thread(target=wait)
            waiter.start()
            time.sleep(0.5)  # its first look has found nothing: it waits
            made = client.post(
                "/jobs", json={"workflow_id": "wf-wait-one", "data_resource_ids": []}, headers=admin
            )
            made.raise_for_status()
            waiter.join(35)
            response = answer["response"]
            if response.status_code != 201 or response.json()["job"]["id"] != made.json()["id"]:
                raise RuntimeError(
                    f"the waiting site did not get the job: {response.status_code} {response.text}"
                )
            created = datetime.fromisoformat(response.json()["job"]["created_at"]).timestamp()
            latencies.append((answer["at"] - created) * 1000)
    return {
        "job_to_claim_p50_ms": round(statistics.median(latencies), 1),
        "job_to_claim_p90_ms": _percentile(latencies, 0.9),
        "job_to_claim_samples_ms": [round(x, 1) for x in latencies],
        "job_to_claim_machine": {key: machine[key] for key in ("machine_cores", "steal_cores", "by_kind")},
    }


# ---- 1,000 waiters ---------------------------------------------------------------------------------------


async def _waiter(host: str, port: int, headers: dict[str, str], seconds: int) -> bytes:
    """A `:claimNext` waiting `seconds` on a raw connection (a few kB client-side, so a thousand fit in the
    bench's process), sent again after a 429 (the probe may hold a place for a second); its status line."""
    body = f'{{"wait_seconds": {seconds}}}'.encode()
    head = [
        "POST /jobs:claimNext HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    while True:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            await writer.drain()
            status = await reader.readline()
        finally:
            writer.close()
        if b" 429 " not in status:
            return status
        await asyncio.sleep(0.05)


def _rss_mb(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def _postgres_cpu(stack: DevStack) -> float:
    """CPU seconds used so far by the stack's PostgreSQL server (its postmaster and backends; not the other
    servers on the machine)."""
    pgdata = str((stack.home / "pg").resolve())
    for process in psutil.process_iter(["cmdline"]):
        if pgdata in " ".join(process.info["cmdline"] or ()) and process.name().startswith("postgres"):
            total = 0.0
            for member in [process, *process.children()]:
                try:
                    cpu = member.cpu_times()
                except psutil.Error:
                    continue
                # The postmaster's children include the backends that ended meanwhile.
                total += cpu.user + cpu.system + cpu.children_user + cpu.children_system
            return total
    return 0.0


def waiters(stack: DevStack, sizes: WaitSizes, *, work: Path) -> dict[str, Any]:
    """`sizes.waiters` idle waiters on an API process of one worker: its memory over idle and the CPU used."""
    sites = _sites(stack, "waiters", sizes.waiters // sizes.waiters_per_site, "waiters")
    (probe,) = _sites(stack, "waiters-probe", 1, "waiters-probe")
    metrics = work / "waiters-metrics"
    metrics.mkdir(exist_ok=True)
    env = {**api_env(stack, metrics), "NMDC_MAX_WAITERS": str(sizes.waiters)}
    with serve("api.main:app", env, work / "waiters-api.log") as (url, pid):
        host, port = url.removeprefix("http://").split(":")
        with httpx.Client(base_url=url, timeout=30) as client:
            for site in sites[:20]:  # every route and model a waiter touches, loaded once
                assert client.post("/jobs:claimNext", headers=site).status_code == 204
            time.sleep(1)
            idle_rss = _rss_mb(pid)

            async def run() -> dict[str, Any]:
                opened = [
                    asyncio.create_task(_waiter(host, int(port), sites[i % len(sites)], 60))
                    for i in range(sizes.waiters)
                ]
                # All wait once the process's bound refuses one more.
                deadline = time.monotonic() + 60
                while True:
                    answer = await asyncio.to_thread(
                        client.post, "/jobs:claimNext", json={"wait_seconds": 1}, headers=probe
                    )
                    if answer.status_code == 429:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the waiters never all waited")
                    await asyncio.sleep(0.3)  # a waiter the probe kept out comes back
                waiting_rss = _rss_mb(pid)
                server = psutil.Process(pid)
                before, database_before, began = server.cpu_times(), _postgres_cpu(stack), time.monotonic()
                with busiest_processes() as machine:
                    await asyncio.sleep(sizes.idle_seconds)
                after, database_after, elapsed = (
                    server.cpu_times(),
                    _postgres_cpu(stack),
                    time.monotonic() - began,
                )
                answered = [task for task in opened if task.done()]
                for task in opened:
                    task.cancel()
                await asyncio.gather(*opened, return_exceptions=True)
                return {
                    "waiters_1000_rss_mb": round(waiting_rss - idle_rss, 1),
                    "waiters_idle_rss_mb": idle_rss,
                    "waiters_waiting_rss_mb": waiting_rss,
                    "waiters_1000_cpu_cores": round(
                        max(0.0, after.user + after.system - before.user - before.system) / elapsed, 4
                    ),
                    "waiters_postgres_cpu_cores": round((database_after - database_before) / elapsed, 4),
                    "waiters_answered_early": len(answered),
                    "waiters": sizes.waiters,
                    "waiters_idle_seconds": sizes.idle_seconds,
                    "waiters_machine": {
                        key: machine[key] for key in ("machine_cores", "steal_cores", "by_kind")
                    },
                }

            return asyncio.run(run())


# ---- the herd --------------------------------------------------------------------------------------------


async def _list_then_claim(
    client: httpx.AsyncClient, headers: dict[str, str], workflow_id: str, seen: dict
) -> None:
    while True:
        page = await client.get(
            "/jobs", params={"claimable": "true", "workflow_id": workflow_id}, headers=headers
        )
        jobs = page.json()["resources"]
        if not jobs:
            return
        for job in jobs:
            answer = await client.post(f"/jobs/{job['id']}:claim", headers=headers)
            seen["statuses"][answer.status_code] = seen["statuses"].get(answer.status_code, 0) + 1
            if answer.status_code == 201:
                seen["jobs"].append(job["id"])
                seen["last"] = time.monotonic()
                break


async def _claim_next(
    client: httpx.AsyncClient, headers: dict[str, str], workflow_id: str, seen: dict
) -> None:
    while True:
        answer = await client.post("/jobs:claimNext", json={"workflow_ids": [workflow_id]}, headers=headers)
        seen["statuses"][answer.status_code] = seen["statuses"].get(answer.status_code, 0) + 1
        if answer.status_code != 201:
            return
        seen["jobs"].append(answer.json()["job"]["id"])
        seen["last"] = time.monotonic()


def _drain(stack: DevStack, sites: list[dict[str, str]], workflow_id: str, n: int, how) -> dict[str, Any]:
    ids = history.unclaimed_ids(stack.database, workflow_id=workflow_id, n=n)
    seen: dict[str, Any] = {"statuses": {}, "jobs": []}

    async def run() -> float:
        # uvicorn closes a connection idle for 5 s, the time httpx keeps one by default: a request sent on a
        # connection as the server closes it fails (httpx.ReadError, 2 of 2 runs of the list-then-claim herd
        # at 06c39d0). Idle ones are dropped well before.
        limits = httpx.Limits(
            max_connections=len(sites) + 10, max_keepalive_connections=len(sites) + 10, keepalive_expiry=1.0
        )
        async with httpx.AsyncClient(base_url=stack.api_url, limits=limits, timeout=60) as client:
            began = time.monotonic()
            await asyncio.gather(*(how(client, site, workflow_id, seen) for site in sites))
            return seen.get("last", time.monotonic()) - began

    with busiest_processes() as machine:
        elapsed = asyncio.run(run())
    with stack.database.session() as session:
        claims = dict(
            session.execute(
                sa.select(Operation.job_id, sa.func.count())
                .where(Operation.job_id.in_(ids))
                .group_by(Operation.job_id)
            ).all()
        )
        left = session.scalar(sa.select(sa.func.count()).where(Job.id.in_(ids), Job.status == "unclaimed"))
    return {
        "claims_per_s": round(len(seen["jobs"]) / elapsed, 1),
        "seconds": round(elapsed, 2),
        "claimed": len(seen["jobs"]),
        "statuses": {str(k): v for k, v in sorted(seen["statuses"].items())},
        "each_job_once": sorted(seen["jobs"]) == sorted(ids) and set(claims.values()) == {1} and left == 0,
        "machine": {key: machine[key] for key in ("machine_cores", "steal_cores", "by_kind")},
    }


def herd(stack: DevStack, sizes: WaitSizes) -> dict[str, Any]:
    """`sizes.herd_sites` sites drain `sizes.herd_jobs` jobs by list-then-claim and by `:claimNext`, alternately."""
    sites = _sites(stack, "herd", sizes.herd_sites, "herd")
    listing, next_runs = [], []
    for i in range(sizes.repeats):
        # A workflow of its own per round: its jobs alone are drained.
        listed, picked = (
            _workflow(stack, f"wf-herd-list-{i}", "herd"),
            _workflow(stack, f"wf-herd-next-{i}", "herd"),
        )
        listing.append(_drain(stack, sites, listed, sizes.herd_jobs, _list_then_claim))
        next_runs.append(_drain(stack, sites, picked, sizes.herd_jobs, _claim_next))
    claim_next_rate = statistics.median(run["claims_per_s"] for run in next_runs)
    listing_rate = statistics.median(run["claims_per_s"] for run in listing)
    return {
        "herd_50_sites_claims_per_s": claim_next_rate,
        "herd_list_then_claim_claims_per_s": listing_rate,
        "herd_claim_next_vs_list_then_claim": round(claim_next_rate / listing_rate, 2),
        "herd_claim_next_409s": sum(run["statuses"].get("409", 0) for run in next_runs),
        "herd_list_then_claim_409s": sum(run["statuses"].get("409", 0) for run in listing),
        "herd_claim_next_each_job_once": all(run["each_job_once"] for run in next_runs),
        "herd_list_then_claim_each_job_once": all(run["each_job_once"] for run in listing),
        "herd_sites": sizes.herd_sites,
        "herd_jobs": sizes.herd_jobs,
        "herd_runs": {"claim_next": next_runs, "list_then_claim": listing},
    }


def waiting_suite(stack: DevStack, sizes: WaitSizes, *, work: Path) -> dict[str, Any]:
    """Every figure of this module (see the module docstring)."""
    return {**job_to_claim(stack, sizes), **waiters(stack, sizes, work=work), **herd(stack, sizes)}
