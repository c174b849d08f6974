"""The two measured paths: one registration to a claimable job, and a burst of registrations to all jobs."""

from __future__ import annotations

import asyncio
import json
import random
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.devstack import DevStack
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Job, Workflow
from nmdc_runtime.services import accounts as accounts_service
from nmdc_runtime.store import accounts as accounts_store

SHA = "c" * 64


@dataclass
class World:
    """Sites with tokens and a workflow, made for one scenario."""

    data_headers: dict[str, str]
    exec_headers: dict[str, str]
    workflow_id: str
    data_type: str
    data_site: str
    exec_site: str


def make_world(stack: DevStack, tag: str, capability: str = "bench") -> World:
    """A data site, an executing site (with tokens) and an enabled workflow for a data type of its own; the
    executing site has `capability`, which the workflow requires (a capability of its own keeps other worlds'
    jobs out of its claimable listing)."""
    data_type = f"bench-{tag}"
    with stack.database.session() as session:
        sites = {}
        for role, caps in (("d", []), ("e", [capability])):
            site_id = f"bench-{tag}-{role}"
            accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=caps)
            sites[role] = accounts_service.generate_credentials(session, site_id=site_id, actor="bench")
        session.add(
            Workflow(
                id=f"wf-{data_type}",
                name=data_type,
                version="1",
                data_types=[data_type],
                required_capabilities=[capability],
                config={"bench": tag},
            )
        )
    headers = tokens(stack, sites)
    return World(headers["d"], headers["e"], f"wf-{data_type}", data_type, f"bench-{tag}-d", f"bench-{tag}-e")


def tokens(stack: DevStack, credentials: dict[str, tuple[Any, str]]) -> dict[str, dict[str, str]]:
    """Authorization headers for each (site client, secret), by the same keys."""
    headers = {}
    for key, (client, secret) in credentials.items():
        response = httpx.post(
            stack.api_url + "/token",
            data={"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret},
            timeout=10,
        )
        response.raise_for_status()
        headers[key] = {"Authorization": f"Bearer {response.json()['access_token']}"}
    return headers


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
            wait_claimable(http, world.exec_headers, start, data_resource_id=dr_id)
            result.samples.append(time.monotonic() - start)
            print(f"  latency sample {i + 1}/{samples}: {result.samples[-1]:.2f} s", flush=True)
    return result


def wait_claimable(http: httpx.Client, headers: dict[str, str], start: float, **filters: str) -> None:
    """Poll `GET /jobs?claimable=true` with `filters` every 0.1 s until it lists a job; at most 120 s after
    `start`."""
    while True:
        page = http.get("/jobs", params={"claimable": "true", **filters}, headers=headers)
        page.raise_for_status()
        if page.json()["resources"]:
            return
        if time.monotonic() - start > 120:
            raise RuntimeError(f"no claimable job of {filters} after 120 s")
        time.sleep(0.1)


def _unclaimed(stack: DevStack, workflow_id: str) -> int:
    with stack.database.session() as session:
        return session.scalar(
            sa.select(sa.func.count())
            .select_from(Job)
            .where(Job.workflow_id == workflow_id, Job.status == "unclaimed")
        )


def count_claimable_over_api(stack: DevStack, world: World) -> int:
    """How many jobs of the world's workflow its executing site sees in `GET /jobs?claimable=true`."""
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


def wait_all(stack: DevStack, world: World, n: int, start: float, timeout: float) -> float:
    """Seconds from `start` until the world's workflow has `n` unclaimed jobs (polled every 0.1 s)."""
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
    elapsed, claimable = land_in_one_transaction(stack, world, rows, n, timeout)
    return {"n": n, "all_jobs_claimable_s": round(elapsed, 2), "claimable_over_api": claimable}


def land_in_one_transaction(
    stack: DevStack, world: World, rows: list[dict[str, Any]], n: int, timeout: float
) -> tuple[float, int]:
    """Insert data resource `rows` in one commit; the seconds from it until `n` jobs exist, and how many
    `GET /jobs?claimable=true` then lists."""
    with stack.database.session() as session:
        session.execute(sa.insert(DataResource), rows)
    elapsed = wait_all(stack, world, n, time.monotonic(), timeout)
    return elapsed, count_claimable_over_api(stack, world)


CLIENTS = ("wrk", "httpx")


def default_client() -> str:
    """wrk when it is installed: the Python client costs most of a core itself, which on a small machine
    takes CPU from the API it is measuring; httpx otherwise."""
    return "wrk" if shutil.which("wrk") else "httpx"


def _percentiles_ms(latencies_s: list[float]) -> dict[str, float]:
    """Mean, percentiles and max in ms, as wrk reports them, so that the two clients' lines compare."""
    s = sorted(latencies_s)

    def ms(x: float) -> float:
        return round(1000 * x, 1)

    return {
        "mean": ms(statistics.fmean(s)),
        **{f"p{q}": ms(s[min(len(s) - 1, q * len(s) // 100)]) for q in (50, 90, 99)},
        "max": ms(s[-1]),
    }


def _register_httpx(stack: DevStack, world: World, n: int, concurrency: int) -> dict[str, Any]:
    """POST until `n` data resources are created, `concurrency` at a time from one asyncio loop.

    A non-201 answer is counted as an error and its index is replaced by a fresh one, as the wrk client does.
    """
    latencies: list[float] = []
    errors: list[str] = []
    created = next_index = in_flight = 0

    async def register() -> None:
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=60, limits=httpx.Limits(max_connections=concurrency)
        ) as http:

            async def worker() -> None:
                nonlocal created, next_index, in_flight
                while created + in_flight < n and len(errors) <= n:
                    i, next_index, in_flight = next_index, next_index + 1, in_flight + 1
                    began = time.monotonic()
                    try:
                        response = await http.post(
                            "/data_resources", json=_body(world, i), headers=world.data_headers
                        )
                    finally:
                        in_flight -= 1
                    latencies.append(time.monotonic() - began)
                    if response.status_code == 201:
                        created += 1
                    else:
                        errors.append(f"{response.status_code} {response.text[:200]}")

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    cpu = time.process_time()
    began = time.monotonic()
    asyncio.run(register())
    took = time.monotonic() - began
    return {
        "created": created,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "posts_took_s": round(took, 2),
        "posts_per_s": round(created / took, 1),
        "latency_ms": _percentiles_ms(latencies),
        "client_cpu_s": round(time.process_time() - cpu, 2),
    }


# Requests after the n-th POST (while the last POSTs are in flight, or to replace a failed one) are a cheap
# `GET /health`, since request() must return something; delay() spaces them out so that they hardly show in the
# figures. `finish` stops the thread and sends wrk SIGINT: wrk's main thread otherwise sleeps out all of `-d`
# before it reports. Counters are globals so that done() can read them through thread:get().
_WRK_SCRIPT = r"""-- Generated by bench/scenarios.py for one burst-api run.
local ffi = require("ffi")
ffi.cdef[[int kill(int pid, int sig); int getpid(void);]]

local n = __N__
local max_errors = __MAX_ERRORS__
local post_headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = [==[__AUTHORIZATION__]==],
}

local function make_body(i)
  return __BODY_EXPRESSION__
end

sent, created, errors, health, finished, checked = 0, 0, 0, 0, false, false
first_error = ""

local function finish()
  if not finished then
    finished = true
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), 2)
  end
end

local function post_needed()
  -- sent - errors = created + POSTs in flight
  return sent - errors < n
end

function delay()
  if post_needed() then return 0 end
  return 250
end

function request()
  if not checked then
    -- wrk calls request() once on this state to check the script before the thread runs, and never sends
    -- that request: had it been a POST, one index would be lost and the burst would wait forever for it.
    checked = true
    return wrk.format("GET", "/health")
  end
  if post_needed() then
    local i = sent
    sent = sent + 1
    return wrk.format("POST", "/data_resources", post_headers, make_body(i))
  end
  return wrk.format("GET", "/health")
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  elseif body:match('^{"status":"%a+","database":"%a+"}$') then
    health = health + 1
  else
    errors = errors + 1
    if first_error == "" then first_error = status .. " " .. body:sub(1, 200):gsub("%s", " ") end
  end
  if created >= n or errors > max_errors then finish() end
end

local threads = {}
function setup(thread) threads[#threads + 1] = thread end

function done(summary, latency, requests)
  local t = threads[1]
  local e = summary.errors
  io.write(string.format(
    'BENCH {"sent": %d, "created": %d, "errors": %d, "health": %d, "requests": %d, "duration_us": %d, '
      .. '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.0f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    t:get("sent"), t:get("created"), t:get("errors"), t:get("health"), summary.requests, summary.duration,
    e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  io.write("BENCH_FIRST_ERROR " .. t:get("first_error") .. "\n")
end
"""

# Stand-ins for the index in _body(): the Lua body is _body()'s JSON with these replaced by expressions of `i`.
_MARK_I, _MARK_SIZE = 918273645, 918273645 + 1000


def _lua_body_expression(world: World) -> str:
    """A Lua expression of `i` that builds json.dumps(_body(world, i)), checked against Python for two indices."""
    text = json.dumps(_body(world, _MARK_I))
    parts = re.split(f"({_MARK_SIZE}|{_MARK_I})", text)
    pieces = []
    for part in parts:
        if part == str(_MARK_I):
            pieces.append("i")
        elif part == str(_MARK_SIZE):
            pieces.append(f"({_MARK_SIZE - _MARK_I} + i)")
        elif part:
            assert "]==]" not in part
            pieces.append(f"[==[{part}]==]")

    def as_python(i: int) -> str:
        return "".join(
            str(i) if p == "i" else str(_MARK_SIZE - _MARK_I + i) if p.startswith("(") else p[4:-4]
            for p in pieces
        )

    for i in (0, 12345):
        assert as_python(i) == json.dumps(_body(world, i)), "_body() no longer fits the wrk script"
    return " .. ".join(pieces)


def _register_wrk(stack: DevStack, world: World, n: int, concurrency: int, limit_s: int) -> dict[str, Any]:
    """POST until `n` data resources are created, with wrk on one thread and `concurrency` connections.

    One thread, so that one set of counters decides when `n` are done; one wrk thread drives thousands of
    requests per second, far above what the API answers here. `-d` is only an upper bound.
    """
    script = _WRK_SCRIPT
    for name, value in {
        "N": n,
        "MAX_ERRORS": n,
        "AUTHORIZATION": world.data_headers["Authorization"],
        "BODY_EXPRESSION": _lua_body_expression(world),
    }.items():
        script = script.replace(f"__{name}__", str(value))
    with tempfile.TemporaryDirectory(prefix="nmdc-bench-wrk-") as folder:
        path = Path(folder) / "burst.lua"
        path.write_text(script)
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{limit_s}s", "--timeout", "30s", "--latency"]
        command += ["-s", str(path), stack.api_url + "/"]
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.monotonic()
        run = subprocess.run(command, capture_output=True, text=True, timeout=limit_s + 60)
        took = time.monotonic() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0 or "BENCH {" not in run.stdout:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stdout[-2000:]} {run.stderr[-2000:]}")
    lines = run.stdout.splitlines()
    counts = json.loads(next(line for line in lines if line.startswith("BENCH {")).removeprefix("BENCH "))
    first_error = next(line for line in lines if line.startswith("BENCH_FIRST_ERROR")).split(" ", 1)[1:]
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", run.stdout, re.MULTILINE)
    duration = counts["duration_us"] / 1e6
    return {
        "created": counts["created"],
        "errors": counts["errors"],
        "first_error": first_error[0] if first_error and first_error[0] else None,
        "posts_sent": counts["sent"],
        "health_requests": counts["health"],
        "socket_errors": counts["socket_errors"],
        "posts_took_s": round(took, 2),
        "wrk_duration_s": round(duration, 2),
        "posts_per_s": round(counts["created"] / duration, 1),
        "wrk_requests_per_s": float(rate.group(1)) if rate else None,
        "latency_ms": {k: round(v / 1000, 1) for k, v in counts["latency_us"].items()},
        "client_cpu_s": round(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, 2),
        "wrk_output": [line for line in lines if not line.startswith("BENCH")],
    }


def _registered_in_db(stack: DevStack, world: World) -> tuple[int, int]:
    with stack.database.session() as session:
        return session.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(DataResource.url))).where(
                DataResource.data_type == world.data_type
            )
        ).one()


def burst_api(
    stack: DevStack, *, n: int, concurrency: int = 16, client: str = "httpx", timeout: float = 600
) -> dict[str, Any]:
    """POST `n` data resources over the API, `concurrency` in flight, with `client` (wrk or httpx); time from
    the first POST until all `n` jobs exist, and how long the POSTs themselves took.

    Afterwards the database must hold exactly `n` data resources (with `n` distinct URLs) of this world: the
    figures are only worth something if the burst registered what it says.
    """
    world = make_world(stack, f"api{int(time.time())}")
    start = time.monotonic()
    if client == "wrk":
        posting = _register_wrk(stack, world, n, concurrency, limit_s=int(timeout))
    else:
        posting = _register_httpx(stack, world, n, concurrency)
    if posting["created"] != n:
        raise RuntimeError(f"{client} created {posting['created']} of {n} data resources: {posting}")
    elapsed = wait_all(stack, world, n, start, timeout)
    claimable = count_claimable_over_api(stack, world)
    registered, distinct_urls = _registered_in_db(stack, world)
    return {
        "client": client,
        "n": n,
        "concurrency": concurrency,
        "first_post_to_all_jobs_claimable_s": round(elapsed, 2),
        "after_last_post_s": round(elapsed - posting["posts_took_s"], 2),
        "claimable_over_api": claimable,
        "registered_in_db": registered,
        "distinct_urls_in_db": distinct_urls,
        **posting,
    }
