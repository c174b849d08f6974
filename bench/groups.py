"""Workflows with inputs by role: a group's last input to its claimable job, and a burst of groups to all jobs."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import array

from bench.devstack import DevStack
from bench.scenarios import (
    SHA,
    LatencyResult,
    land_in_one_transaction,
    tokens,
    wait_claimable,
)
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Job, Workflow
from nmdc_runtime.services import accounts as accounts_service
from nmdc_runtime.store import accounts as accounts_store

ROLES = ("contigs", "mapping")


@dataclass
class GroupWorld:
    """Two data sites (one registers each role's data), an executing site with tokens, and a workflow whose
    two inputs by role have data types of their own."""

    headers: dict[str, dict[str, str]]
    """By site: `contigs`, `mapping` (the data sites), `e` (the executing site)."""
    sites: dict[str, str]
    workflow_id: str
    data_types: dict[str, str]
    """By role."""

    @property
    def exec_headers(self) -> dict[str, str]:
        """The executing site's (as `scenarios.World` names them, for its helpers)."""
        return self.headers["e"]


def make_group_world(stack: DevStack, tag: str) -> GroupWorld:
    data_types = {role: f"bench-{tag}-{role}" for role in ROLES}
    capability = f"bench-{tag}"
    credentials, sites = {}, {}
    with stack.database.session() as session:
        for key, caps in (("contigs", []), ("mapping", []), ("e", [capability])):
            site_id = f"bench-{tag}-{key}"
            accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=caps)
            credentials[key] = accounts_service.generate_credentials(session, site_id=site_id, actor="bench")
            sites[key] = site_id
        session.add(
            Workflow(
                id=f"wf-bench-{tag}",
                name=tag,
                version="1",
                data_types=sorted(data_types.values()),
                inputs={
                    role: {"data_type": data_type, "optional": False}
                    for role, data_type in data_types.items()
                },
                required_capabilities=[capability],
                config={"bench": tag},
            )
        )
    headers = tokens(stack, credentials)
    return GroupWorld(headers, sites, f"wf-bench-{tag}", data_types)


def _body(world: GroupWorld, role: str, i: int) -> dict[str, Any]:
    return {
        "name": f"sample-{i}.{role}",
        "url": f"https://{role}.example.org/{world.workflow_id}/sample-{i}.{role}",
        "data_type": world.data_types[role],
        "size": 1000 + i,
        "checksums": [{"type": "sha256", "checksum": SHA}],
        "group": f"{world.workflow_id}-sample-{i}",
    }


def latency(stack: DevStack, *, samples: int, seed: int = 2) -> LatencyResult:
    """For each sample: one data site registers its contigs, a random 0-5 s later (anywhere in the sensor's
    5-second loop) the other registers its mapping; the clock runs from that second, completing registration
    until the executing site sees the group's job in `GET /jobs?claimable=true&group=…` (polled every 0.1 s)."""
    world = make_group_world(stack, f"glat{int(time.time())}")
    rng = random.Random(seed)
    result = LatencyResult()
    with httpx.Client(base_url=stack.api_url, timeout=10) as http:
        for i in range(samples):
            first = http.post(
                "/data_resources", json=_body(world, "contigs", i), headers=world.headers["contigs"]
            )
            first.raise_for_status()
            time.sleep(rng.uniform(0, 5))
            start = time.monotonic()
            last = http.post(
                "/data_resources", json=_body(world, "mapping", i), headers=world.headers["mapping"]
            )
            last.raise_for_status()
            wait_claimable(http, world.exec_headers, start, group=last.json()["group"])
            result.samples.append(time.monotonic() - start)
            print(f"  group latency sample {i + 1}/{samples}: {result.samples[-1]:.2f} s", flush=True)
    return result


def _jobs_with_every_input(stack: DevStack, workflow_id: str) -> int:
    """How many unclaimed jobs the workflow has with an input of each role."""
    with stack.database.session() as session:
        return session.scalar(
            sa.select(sa.func.count()).where(
                Job.workflow_id == workflow_id,
                Job.status == "unclaimed",
                Job.config["inputs"].has_all(array(list(ROLES))),
            )
        )


def burst(stack: DevStack, *, n: int, timeout: float = 300) -> dict[str, Any]:
    """`n` groups of two roles land in one transaction (as a bulk registration does), every group's contigs
    first, then every mapping, each role from its own data site: the sensor first records `n` incomplete
    groups, then completes them. The clock starts at the commit and stops when all `n` jobs exist, unclaimed
    (polled in the database every 0.1 s); then `GET /jobs?claimable=true` is paged through to check that the
    executing site sees them all."""
    world = make_group_world(stack, f"gburst{int(time.time())}")
    rows = [
        {"id": new_id("dr"), "site_id": world.sites[role], **_body(world, role, i)}
        for role in ROLES
        for i in range(n)
    ]
    elapsed, claimable = land_in_one_transaction(stack, world, rows, n, timeout)
    return {
        "groups": n,
        "data_resources": 2 * n,
        "all_jobs_claimable_s": round(elapsed, 2),
        "jobs_with_both_inputs": _jobs_with_every_input(stack, world.workflow_id),
        "claimable_over_api": claimable,
    }
