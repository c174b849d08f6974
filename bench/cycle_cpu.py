"""Where a claim → execution → finish cycle spends CPU (bench/README.md, "The cycle").

    .venv/bin/python -m bench.cycle_cpu            # about a minute and a half

Starts its own `make dev`, as `python -m bench` does, and measures two things:

- per request: the API app called in this process through ASGI, one request at a time (no HTTP, no load
  generator, no other request beside it), this process's CPU time for each step of `--cycles` cycles and for
  as many of each read in `READS`, `--rounds` times; the first round warms the caches and is left out of the
  medians;
- per cycle on `make dev`: `wrk` running the cycle on 16 connections for 5 s, 3 times, and the CPU its API
  workers, PostgreSQL's processes and Dagster's processes used meanwhile, per cycle, beside the whole
  machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import history, load
from bench.devstack import dev_stack
from bench.paths import api_env, dev_api_pids
from bench.scenarios import make_world

_STAMP = '"2030-01-01T00:00:00Z"'
STEPS = ("claim", "execution", "finish")
READS = ("list_claimable", "get_job")
"""Reads timed after each round's cycles, as many as its cycles: the site's first page of claimable jobs (a page
of 20 from a hundred made for it), and one job."""


async def _call(
    app, authorization: bytes, method: str, path: str, body: bytes = b"", query: bytes = b""
) -> tuple[int, Any]:
    """One request through the app's ASGI interface; its status and JSON answer."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"authorization", authorization),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]) or b"null")


async def _in_process(stack, world, *, cycles: int, rounds: int) -> dict[str, list[float]]:
    """CPU ms per request of each step, one value per round."""
    import api.main  # after the environment is set: the app reads its settings when imported

    app, authorization = api.main.app, world.exec_headers["Authorization"].encode()
    per_step: dict[str, list[float]] = {step: [] for step in STEPS + READS}
    async with app.router.lifespan_context(app):
        for _ in range(rounds):
            spent = dict.fromkeys(STEPS, 0.0)
            for job_id in history.unclaimed_ids(stack.database, workflow_id=world.workflow_id, n=cycles):
                start = time.process_time()
                status, op = await _call(app, authorization, "POST", f"/jobs/{job_id}:claim")
                assert status == 201, (status, op)
                claimed = time.process_time()
                body = (
                    f'{{"operation_id": "{op["id"]}", "status": "succeeded", "started_at": {_STAMP}, '
                    f'"ended_at": {_STAMP}, "outputs": [], "details": {{}}}}'
                )
                status, execution = await _call(
                    app, authorization, "POST", f"/jobs/{job_id}/executions", body.encode()
                )
                assert status == 201, (status, execution)
                recorded = time.process_time()
                body = f'{{"done": true, "result": {{"execution_id": "{execution["id"]}"}}}}'
                status, done = await _call(
                    app, authorization, "PATCH", f"/operations/{op['id']}", body.encode()
                )
                assert status == 200 and done["done"], (status, done)
                finished = time.process_time()
                steps = (claimed - start, recorded - claimed, finished - recorded)
                for step, seconds in zip(STEPS, steps, strict=True):
                    spent[step] += seconds
            for step in STEPS:
                per_step[step].append(round(1000 * spent[step] / cycles, 2))
            listed = history.unclaimed_ids(stack.database, workflow_id=world.workflow_id, n=100)
            start = time.process_time()
            for _ in range(cycles):
                status, page = await _call(app, authorization, "GET", "/jobs", query=b"claimable=true")
                assert status == 200 and len(page["resources"]) == 20, (status, page)
            read = time.process_time()
            for _ in range(cycles):
                status, job = await _call(app, authorization, "GET", f"/jobs/{listed[0]}")
                assert status == 200, (status, job)
            steps = (read - start, time.process_time() - read)
            for step, seconds in zip(READS, steps, strict=True):
                per_step[step].append(round(1000 * seconds / cycles, 2))
            # Claimed in no cycle (those claim their own jobs by id): out of the next round's listing.
            history.finish_unclaimed(stack.database, workflow_id=world.workflow_id)
    return per_step


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    """CPU time of the processes and of their children that ended (PostgreSQL's backends that closed are
    counted in the postmaster's)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _groups(stack) -> dict[str, list[psutil.Process]]:
    """The API workers, PostgreSQL's processes and Dagster's processes of this stack, as they are now."""
    api = {pid: psutil.Process(pid) for pid in dev_api_pids(stack)}
    groups: dict[str, list[psutil.Process]] = {"api": list(api.values()), "postgres": [], "dagster": []}
    for process in psutil.process_iter():
        try:
            name, command = process.name(), " ".join(process.cmdline())
        except psutil.Error:
            continue
        if name.startswith("postgres"):
            groups["postgres"].append(process)
        elif "dagster" in command and process.pid not in api:
            groups["dagster"].append(process)
    return groups


def _on_make_dev(stack, world, *, runs: int, seconds: float) -> list[dict[str, float]]:
    """CPU ms per cycle of each group and of the machine, for each wrk run on `make dev`'s API."""
    figures = []
    for _ in range(runs):
        ids = history.unclaimed_ids(stack.database, workflow_id=world.workflow_id, n=4000)
        before = {name: _cpu_seconds(members) for name, members in _groups(stack).items()}
        machine = psutil.cpu_times()
        run = load.wrk(
            stack.api_url,
            load.CYCLES,
            threads=16,
            connections=16,
            seconds=seconds,
            authorization=world.exec_headers["Authorization"],
            ids=ids,
        )
        busy = sum(psutil.cpu_times()[:3]) - sum(machine[:3])  # user, nice, system
        done = run.cycles
        # The groups as they are at the end too: processes that started meanwhile count whole, those that
        # ended count through their parent.
        figure = {
            f"{name}_ms": round(1000 * (_cpu_seconds(members) - before[name]) / done, 2)
            for name, members in _groups(stack).items()
        }
        figure.update(cycles_per_s=round(done / run.seconds, 1), machine_ms=round(1000 * busy / done, 2))
        figure["machine_cores"] = round(busy / run.seconds, 2)
        figures.append(figure)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=400, help="cycles per in-process round")
    parser.add_argument("--rounds", type=int, default=6, help="in-process rounds (the first is a warm-up)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="nmdc-bench-cycle-cpu-"))
    with dev_stack(home / "nmdc", home / "dev.log") as stack:
        world = make_world(stack, f"cpu{int(time.time())}", capability=f"cpu{int(time.time())}")
        on_make_dev = _on_make_dev(stack, world, runs=3, seconds=5)
        os.environ.update(api_env(stack, Path(tempfile.mkdtemp(prefix="nmdc-bench-metrics-"))))
        per_step = asyncio.run(_in_process(stack, world, cycles=args.cycles, rounds=args.rounds))
    report = {
        "per_request_cpu_ms": {
            step: {"median": statistics.median(values[1:]), "rounds": values}
            for step, values in per_step.items()
        },
        "make_dev_per_cycle": on_make_dev,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
