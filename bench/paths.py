"""The claim path and the listings, measured from outside with wrk: against an API process of one uvicorn
worker (started here, on the dev stack's database and NMDC_HOME, as `make dev` starts its workers), the bare
FastAPI app and psycopg2 alone (bench/bare.py), and `make dev`'s own API for the full cycle.

Short timed runs are repeated (`repeats`) and reported as medians; data sizes are built once, growing.
"""

from __future__ import annotations

import collections
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg2
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from bench import bare, history, load
from bench.devstack import REPO, DevStack, _up
from bench.scenarios import World, make_world
from nmdc_runtime.config import Settings
from nmdc_runtime.db import database_name, libpq_url, with_database
from nmdc_runtime.models import Job
from nmdc_runtime.processes import free_port, stop_group
from nmdc_runtime.schemas.common import DEFAULT_PAGE_SIZE
from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store.jobs import claimable_page_query
from nmdc_runtime.store.pages import PageParams, encode_page_token, page_query, page_scope
from nmdc_runtime.store.rules import claimable_by

CLAIM_CONNECTIONS = 16
LIST_CONNECTIONS = 4


@dataclass
class Sizes:
    """What one run measures: the full run (`make bench`) or the smoke run in `make test`."""

    repeats: int = 3
    seconds: float = 5.0
    """Length of each timed wrk run."""
    claims_per_run: int = 12_000
    """Jobs made for each claim run (more than it can claim in `seconds`)."""
    history: tuple[int, ...] = (10_000, 100_000, 1_000_000, 5_000_000)
    claimable_behind_history: int = 1_000
    lapsed_behind_history: int = 10
    claimable_many: int = 1_000_000
    deep_page: int = 500_000
    backlogs: tuple[int, ...] = (1_000, 10_000, 100_000)


SMOKE = Sizes(
    repeats=1,
    seconds=1.0,
    claims_per_run=3_000,
    history=(2_000, 5_000),
    claimable_behind_history=50,
    lapsed_behind_history=2,
    claimable_many=2_000,
    deep_page=1_000,
    backlogs=(100,),
)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def _dsn(stack: DevStack) -> str:
    return libpq_url(stack.database.url)


@contextmanager
def serve(app: str, env: dict[str, str], log: Path, timeout: float = 60) -> Iterator[tuple[str, int]]:
    """`uvicorn <app>` with one worker on a free port, as a process group of its own; yields (URL, pid)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).parent / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--no-access-log", "--log-level", "warning"]
    with log.open("w") as output:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            started = time.monotonic()
            while not _up(url + "/health"):
                if process.poll() is not None or time.monotonic() - started > timeout:
                    raise RuntimeError(f"{app} did not start; see {log}")
                time.sleep(0.2)
            yield url, process.pid
        finally:
            stop_group(process, 30, name=app)


def api_env(stack: DevStack, metrics_dir: Path) -> dict[str, str]:
    """The environment `make dev` gives its API workers, on the dev stack's database and NMDC_HOME."""
    env = dict(os.environ)
    env.update(
        NMDC_HOME=str(stack.home),
        NMDC_DATABASE_URL=stack.database.url,
        NMDC_DAGSTER_DATABASE_URL=with_database(
            stack.database.url, database_name(stack.database.url) + "_dagster"
        ),
        NMDC_LOG_REQUESTS="false",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    return env


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of a process so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for {pid}")


def dev_api_pids(stack: DevStack) -> list[int]:
    """The processes of `make dev`'s API (the uvicorn supervisor and its workers) of this stack."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            env = process.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if env.get("NMDC_HOME") == str(stack.home) and "PROMETHEUS_MULTIPROC_DIR" in env:
            found.append(process.pid)
    return found


def _authorization(world: World) -> str:
    return world.exec_headers["Authorization"]


def _claims(url: str, world: World, ids: list[str], seconds: float) -> load.Run:
    return load.wrk(
        url,
        load.CLAIMS,
        threads=2,
        connections=CLAIM_CONNECTIONS,
        seconds=seconds,
        authorization=_authorization(world),
        ids=ids,
    )


def _listings(url: str, world: World, path: str, sizes: Sizes) -> tuple[list[load.Run], list[dict[str, Any]]]:
    """`sizes.repeats` runs of `_listing`, and what shared the machine during each (the cores busy, the cores
    the hypervisor stole, the CPU of each kind of process). The page measured must be a full one: an empty
    listing (a drained site's) answers fast and would measure nothing."""
    page = httpx.get(url + path, headers=world.exec_headers, timeout=30)
    page.raise_for_status()
    if len(page.json()["resources"]) != DEFAULT_PAGE_SIZE:
        raise RuntimeError(f"{path} lists {len(page.json()['resources'])} jobs, not a full page")
    runs, machine = [], []
    for _ in range(sizes.repeats):
        with busiest_processes() as busy:
            runs.append(_listing(url, world, path, sizes.seconds))
        machine.append({key: busy[key] for key in ("machine_cores", "steal_cores", "by_kind")})
    return runs, machine


def _listing(url: str, world: World, path: str, seconds: float) -> load.Run:
    return load.wrk(
        url,
        load.GETS,
        threads=2,
        connections=LIST_CONNECTIONS,
        seconds=seconds,
        authorization=_authorization(world),
        path=path,
    )


def claim_suite(
    stack: DevStack,
    sizes: Sizes,
    *,
    work: Path,
    profile_to: Path | None = None,
    profile_cycle_to: Path | None = None,
) -> dict[str, Any]:
    """claims/s over HTTP (one API worker), through the bare app, and through psycopg2 alone; full cycles on
    `make dev`'s API; the API processes' peak memory. With `profile_to` (`profile_cycle_to`), one more run of
    claims (of cycles) on the one-worker API under py-spy (not counted) writes a flame graph there."""
    world = make_world(stack, f"claim{int(time.time())}", capability=f"claim{int(time.time())}")

    def fresh() -> list[str]:
        return history.unclaimed_ids(stack.database, workflow_id=world.workflow_id, n=sizes.claims_per_run)

    http, bare_runs, sql_runs, cycles = [], [], [], []
    with (
        tempfile.TemporaryDirectory(prefix="nmdc-bench-metrics-") as metrics,
        serve("api.main:app", api_env(stack, Path(metrics)), work / "api-1-worker.log") as (url, pid),
    ):
        for _ in range(sizes.repeats):
            http.append(_claims(url, world, fresh(), sizes.seconds))
        if profile_to is not None:
            _profile(pid, profile_to, lambda: _claims(url, world, fresh(), sizes.seconds), sizes.seconds)
        if profile_cycle_to is not None:
            _profile(pid, profile_cycle_to, lambda: _cycles(url, world, fresh(), sizes), sizes.seconds)
        rss_one_worker = peak_rss_mb(pid)
    bare_env = dict(os.environ, BENCH_DSN=_dsn(stack), BENCH_SITE=world.exec_site)
    with serve("bench.bare:app", bare_env, work / "bare.log") as (url, _):
        for _ in range(sizes.repeats):
            bare_runs.append(_claims(url, world, fresh(), sizes.seconds))
    for _ in range(sizes.repeats):
        sql_runs.append(
            bare.sql_claims(
                _dsn(stack), world.exec_site, fresh(), threads=CLAIM_CONNECTIONS, seconds=sizes.seconds
            )
        )
    busiest, activity = [], []
    for _ in range(sizes.repeats):
        ids = fresh()  # made before the count starts: inserting them is not the cycle's work
        with busiest_processes() as busy, database_activity(_dsn(stack)) as active:
            cycles.append(_cycles(stack.api_url, world, ids, sizes))
        busiest.append(busy)
        activity.append(active)
    rss_dev = max(peak_rss_mb(pid) for pid in dev_api_pids(stack))
    http_per_s = _median([run.ok_per_s for run in http])
    bare_per_s = _median([run.ok_per_s for run in bare_runs])
    return {
        "claim_http_per_s": http_per_s,
        "claim_bare_fastapi_per_s": bare_per_s,
        "claim_sql_per_s": _median([run["per_s"] for run in sql_runs]),
        "claim_http_vs_bare_ratio": round(http_per_s / bare_per_s, 3),
        "claim_http_p50_ms": _median([run.latency_ms["p50"] for run in http]),
        "claim_http_p99_ms": _median([run.latency_ms["p99"] for run in http]),
        "claim_bare_p50_ms": _median([run.latency_ms["p50"] for run in bare_runs]),
        "claim_cycles_per_s": _median([run.cycles_per_s for run in cycles]),
        "api_peak_rss_mb": max(rss_one_worker, rss_dev),
        "api_peak_rss_mb_one_worker": rss_one_worker,
        "api_peak_rss_mb_make_dev": rss_dev,
        "runs": {
            "claim_http_per_s": [round(run.ok_per_s, 1) for run in http],
            "claim_bare_fastapi_per_s": [round(run.ok_per_s, 1) for run in bare_runs],
            "claim_sql_per_s": [run["per_s"] for run in sql_runs],
            "claim_cycles_per_s": [round(run.cycles_per_s, 1) for run in cycles],
        },
        # What shared the two cores with each cycle run: a run that stands out says why here.
        "cycles_busiest_processes": busiest,
        "cycles_database_activity": activity,
    }


# What a process is, from its command line: the first pattern it contains names it.
_KINDS = (
    ("postgres: checkpointer", "PostgreSQL checkpointer"),
    ("postgres: walwriter", "PostgreSQL WAL writer"),
    ("postgres: autovacuum", "PostgreSQL autovacuum"),
    ("postgres: parallel worker", "PostgreSQL parallel workers"),
    ("_dagster ", "PostgreSQL backends of Dagster's database"),
    ("postgres: ", "PostgreSQL backends of the runtime's database"),
    ("pginstall/bin/postgres", "PostgreSQL postmaster (and its ended children)"),
    ("spawn_main", "API workers (uvicorn)"),
    ("api.main:app", "API workers (uvicorn)"),  # the history scenario's one-process API
    ("dagster._daemon", "Dagster daemon"),
    ("dagster api grpc", "Dagster code server"),
    ("webserver", "Dagster webserver"),
    ("-m bench", "the bench (and its ended children: wrk)"),
)


def _kind(what: str) -> str:
    return next((kind for pattern, kind in _KINDS if pattern in what), "other")


@contextmanager
def busiest_processes(top: int = 8) -> Iterator[dict[str, Any]]:
    """The CPU used during the block, filled in when it ends: the whole machine's (cores busy, and cores
    stolen by the hypervisor), each kind of process's (`_KINDS`), and the `top` processes'. A process's figure includes its children that ended (the
    bench's own includes `wrk`'s; the postmaster's, its closed backends')."""

    def times() -> dict[int, tuple[float, str]]:
        seen = {}
        for process in psutil.process_iter():
            try:
                cpu = process.cpu_times()
                seen[process.pid] = (
                    cpu.user + cpu.system + cpu.children_user + cpu.children_system,
                    " ".join(process.cmdline())[:120] or process.name(),
                )
            except psutil.Error:
                continue
        return seen

    found: dict[str, Any] = {}
    before, machine, began = times(), psutil.cpu_times(), time.monotonic()
    yield found
    after, elapsed = times(), time.monotonic() - began
    used = sorted(
        ((spent - before.get(pid, (0.0, ""))[0], what) for pid, (spent, what) in after.items()), reverse=True
    )
    now = psutil.cpu_times()
    busy = sum(now[:3]) - sum(machine[:3])  # user, nice, system
    kinds: collections.Counter = collections.Counter()
    for spent, what in used:
        kinds[_kind(what)] += spent
    found["machine_cores"] = round(busy / elapsed, 2)
    # Time the hypervisor gave this VM's CPUs to others: cores the machine lost, whatever ran here.
    found["steal_cores"] = round((now.steal - machine.steal) / elapsed, 2)
    found["by_kind"] = {kind: round(spent / elapsed, 2) for kind, spent in kinds.most_common() if spent > 0}
    found["busiest"] = [{"what": what, "cores": round(spent / elapsed, 2)} for spent, what in used[:top]]


# The statement with its literals as `?` (psycopg2 sends values inline), so each kind counts as one.
_ACTIVE_STATEMENTS = r"""
    SELECT datname, backend_type, coalesce(wait_event_type || ':' || wait_event, 'running'),
           left(regexp_replace(regexp_replace(query, '\s+', ' ', 'g'), '''[^'']*''|\m\d+\M', '?', 'g'), 160)
    FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()
"""


# Server-wide counters read before and after the block: WAL written (and how much of it was full-page images,
# which the first change of a page after a checkpoint writes), checkpoints, the runtime database's block
# reads from outside shared_buffers, transactions and rows, and the connections (sessions) opened to it and to
# every database (each one a new server process: Dagster's storage opens one per call, without a pool).
_SERVER_COUNTERS = """
    SELECT w.wal_records, w.wal_fpi, w.wal_bytes::bigint, w.wal_buffers_full,
           c.num_timed + c.num_requested, c.buffers_written,
           d.blks_read, d.blks_hit, d.xact_commit, d.tup_inserted, d.tup_updated,
           d.sessions, (SELECT sum(sessions)::bigint FROM pg_stat_database)
    FROM pg_stat_wal w, pg_stat_checkpointer c, pg_stat_database d
    WHERE d.datname = current_database()
"""
_COUNTER_NAMES = (
    "wal_records",
    "wal_full_page_images",
    "wal_bytes",
    "wal_buffers_full",
    "checkpoints",
    "checkpoint_buffers_written",
    "blocks_read",
    "blocks_hit",
    "commits",
    "rows_inserted",
    "rows_updated",
    "sessions_opened",
    "sessions_opened_all_databases",
)


@contextmanager
def database_activity(dsn: str, *, every: float = 0.1, top: int = 10) -> Iterator[dict[str, Any]]:
    """What the database server did during the block, filled in when it ends: `pg_stat_activity` sampled every
    `every` seconds (a thread, on its own connection), the `top` (database, process, wait, statement) seen
    most with the mean number of backends found in each; and the server's counters, as differences."""
    seen: collections.Counter = collections.Counter()
    samples = 0
    stop = threading.Event()

    def counters() -> dict[str, int]:
        with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
            cursor.execute(_SERVER_COUNTERS)
            values = dict(zip(_COUNTER_NAMES, cursor.fetchone(), strict=True))
        connection.close()
        return values

    def sample() -> None:
        nonlocal samples
        connection = psycopg2.connect(dsn)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                while not stop.wait(every):
                    cursor.execute(_ACTIVE_STATEMENTS)
                    seen.update(cursor.fetchall())
                    samples += 1
        finally:
            connection.close()

    sampler = threading.Thread(target=sample, name="pg_stat_activity", daemon=True)
    found: dict[str, Any] = {}
    before = counters()
    sampler.start()
    try:
        yield found
    finally:
        stop.set()
        sampler.join(timeout=10)
    after = counters()
    found["counters"] = {name: after[name] - before[name] for name in _COUNTER_NAMES}
    found["samples"] = samples
    found["active"] = [
        {
            "database": database,
            "process": process,
            "waiting_on": wait,
            "statement": statement,
            "backends": round(n / samples, 3),
        }
        for (database, process, wait, statement), n in seen.most_common(top)
        if samples
    ]


def _cycles(url: str, world: World, ids: list[str], sizes: Sizes) -> load.Run:
    """Claim → execution → finish cycles, one per connection at a time (a cycle takes three requests, so a
    quarter of a claim run's jobs last the run)."""
    return load.wrk(
        url,
        load.CYCLES,
        threads=CLAIM_CONNECTIONS,
        connections=CLAIM_CONNECTIONS,
        seconds=sizes.seconds,
        authorization=_authorization(world),
        ids=ids[: sizes.claims_per_run // 4],
    )


def _profile(pid: int, svg: Path, run: Callable[[], Any], seconds: float) -> None:
    """Sample process `pid` with py-spy while `run()` drives it; a flame graph to `svg`.

    Only the thread holding the GIL is sampled (`--gil`): the Python work that uses the CPU, not the thread
    pool's idle threads, which would otherwise fill most of the graph."""
    svg.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--output", str(svg)),
            *("--duration", str(max(1, int(seconds))), "--rate", "200", "--format", "flamegraph", "--gil"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    run()
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err[-2000:]}")


def _claimable_path(token: str | None = None) -> str:
    return "/jobs?claimable=true" + (f"&page_token={token}" if token else "")


def _finish_open_work(stack: DevStack, workflow_id: str) -> None:
    """A workflow's open work joins its history: open operations end, unclaimed and claimed jobs succeed.

    The operations end canceled (given back), not expired: an expiry is the site's fault, and three in a row
    would drain the listing site (docs/design.md, "Drained sites"), emptying the very listing measured."""
    with stack.database.session() as session:
        session.execute(
            sa.text(
                "UPDATE operations SET state = 'canceled', done = true, expire_time = now() + interval '1 day',"
                ' error = \'{"code": "CANCELLED", "message": "bench"}\''
                " WHERE workflow_id = :workflow_id AND NOT done"
            ),
            {"workflow_id": workflow_id},
        )
        session.execute(
            sa.text(
                "UPDATE jobs SET status = 'succeeded' "
                "WHERE workflow_id = :workflow_id AND status IN ('unclaimed', 'claimed')"
            ),
            {"workflow_id": workflow_id},
        )


def explain(stack: DevStack, site_id: str, *, after: int | None = None, predicate: bool = False) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the first claimable page of a site as `GET /jobs?claimable=true` runs it
    (or the page after `after`); `predicate`: the same page from the one-predicate form `claimable_by`, the
    plan the listing had before it became a union."""
    page = PageParams(size=DEFAULT_PAGE_SIZE, after=after)
    drain_after = Settings().site_drain_after
    if predicate:
        stmt = page_query(
            sa.select(Job).where(claimable_by(site_id, sa.func.now(), drain_after)), Job.seq, page
        )
    else:
        stmt, params, _ = claimable_page_query(site_id=site_id, drain_after=drain_after, page=page)
        stmt = stmt.params(**params)
    sql = stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    with stack.database.session() as session:
        return "\n".join(session.scalars(sa.text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")))


def history_suite(
    stack: DevStack, sizes: Sizes, *, work: Path, profile_listing_to: Path | None = None
) -> dict[str, Any]:
    """The claimable listing and the claim against a growing history: at each size (jobs in the table) the
    listing site's open work is 1,000 claimable jobs (some under lapsed leases) behind all its finished
    ones; then 1,000,000 claimable, first page and a deep one. With `profile_listing_to`, one more run of
    first pages behind the largest history under py-spy (not counted) writes a flame graph there."""
    tag = int(time.time())
    lister = make_world(stack, f"list{tag}", capability=f"list{tag}")
    claimer = make_world(stack, f"curve{tag}", capability=f"curve{tag}")
    # The lapsed claims' holder, a site of its own: the reaper ends them `expired`, which counts against their
    # holder, and three would drain the listing site and empty the listing measured.
    silent = f"bench-list{tag}-silent"
    with stack.database.session() as session:
        accounts_store.create_site(session, site_id=silent, name=silent, capabilities=[f"list{tag}"])
    curve = []
    with tempfile.TemporaryDirectory(prefix="nmdc-bench-metrics-") as metrics:
        env = api_env(stack, Path(metrics))
        with serve("api.main:app", env, work / "api-history.log") as (url, pid):
            for size in sizes.history:
                _finish_open_work(stack, lister.workflow_id)
                built = history.add_jobs(
                    stack.database,
                    workflow_id=lister.workflow_id,
                    n=max(0, size - history.count_jobs(stack.database)),
                    status="succeeded",
                )
                history.unclaimed_ids(
                    stack.database, workflow_id=lister.workflow_id, n=sizes.claimable_behind_history
                )
                history.add_lapsed_claims(
                    stack.database,
                    workflow_id=lister.workflow_id,
                    site_id=silent,
                    n=sizes.lapsed_behind_history,
                )
                history.analyze(stack.database)
                jobs = history.count_jobs(stack.database)
                listings, machine = _listings(url, lister, _claimable_path(), sizes)
                claims = []
                for _ in range(sizes.repeats):
                    ids = history.unclaimed_ids(
                        stack.database, workflow_id=claimer.workflow_id, n=sizes.claims_per_run
                    )
                    claims.append(_claims(url, claimer, ids, sizes.seconds))
                point = {
                    "jobs": jobs,
                    "built_s": round(built, 1),
                    "list_claimable_p50_ms": _median([r.latency_ms["p50"] for r in listings]),
                    "list_claimable_p99_ms": _median([r.latency_ms["p99"] for r in listings]),
                    "list_claimable_p99_ms_runs": [r.latency_ms["p99"] for r in listings],
                    # What shared the two cores with each listing run: a tail that stands out says why here.
                    "listing_machine": machine,
                    "claim_p50_ms": _median([r.latency_ms["p50"] for r in claims]),
                    "claim_p99_ms": _median([r.latency_ms["p99"] for r in claims]),
                    "claim_per_s": _median([r.ok_per_s for r in claims]),
                    "runtime_status_ms": _median(
                        [history.runtime_status_ms(stack.database) for _ in range(sizes.repeats)]
                    ),
                    "count_by_status_ms": _median(
                        [history.count_by_status_ms(stack.database) for _ in range(sizes.repeats)]
                    ),
                }
                curve.append(point)
                print(f"  history {jobs} jobs: {point}", flush=True)
            behind = curve[-1]
            if profile_listing_to is not None:
                _profile(
                    pid,
                    profile_listing_to,
                    lambda: _listing(url, lister, _claimable_path(), sizes.seconds),
                    sizes.seconds,
                )
            plans = {
                "history_first_page": explain(stack, lister.exec_site),
                "history_first_page_as_one_predicate": explain(stack, lister.exec_site, predicate=True),
            }
            _finish_open_work(stack, lister.workflow_id)
            built = history.add_jobs(
                stack.database, workflow_id=lister.workflow_id, n=sizes.claimable_many, status="unclaimed"
            )
            history.analyze(stack.database)
            after = history.seq_of_nth_claimable(
                stack.database, workflow_id=lister.workflow_id, n=sizes.deep_page
            )
            token = encode_page_token(after, page_scope("/jobs", [("claimable", "true")]))
            first, first_machine = _listings(url, lister, _claimable_path(), sizes)
            deep, deep_machine = _listings(url, lister, _claimable_path(token), sizes)
            _check_deep_page(stack, url, lister, token, after)
            plans["1m_first_page"] = explain(stack, lister.exec_site)
            plans["1m_deep_page"] = explain(stack, lister.exec_site, after=after)
    first_p50 = _median([r.latency_ms["p50"] for r in first])
    deep_p50 = _median([r.latency_ms["p50"] for r in deep])
    return {
        "list_claimable_p50_ms_history": behind["list_claimable_p50_ms"],
        "list_claimable_p99_ms_history": behind["list_claimable_p99_ms"],
        "list_claimable_history_jobs": behind["jobs"],
        "list_jobs_p50_ms_1m": first_p50,
        "list_jobs_p99_ms_1m": _median([r.latency_ms["p99"] for r in first]),
        "list_jobs_deep_p50_ms_1m": deep_p50,
        "list_jobs_deep_p99_ms_1m": _median([r.latency_ms["p99"] for r in deep]),
        "list_jobs_deep_vs_first": round(deep_p50 / first_p50, 2),
        "list_jobs_1m_built_s": round(built, 1),
        "list_jobs_1m_runs": {
            "first_p99_ms": [r.latency_ms["p99"] for r in first],
            "deep_p99_ms": [r.latency_ms["p99"] for r in deep],
            "first_machine": first_machine,
            "deep_machine": deep_machine,
        },
        "curve_history": curve,
        "plans": plans,
    }


def _check_deep_page(stack: DevStack, url: str, world: World, token: str, after: int) -> None:
    """The deep page is a real page: full, and starting at the first claimable job after the position its
    token names."""
    page = httpx.get(url + _claimable_path(token), headers=world.exec_headers, timeout=30)
    page.raise_for_status()
    body = page.json()
    if len(body["resources"]) != DEFAULT_PAGE_SIZE or body["next_page_token"] is None:
        raise RuntimeError(f"the deep page is not a full page: {len(body['resources'])} jobs")
    with stack.database.session() as session:
        first = session.scalar(
            sa.select(Job.id)
            .where(Job.workflow_id == world.workflow_id, Job.status == "unclaimed", Job.seq > after)
            .order_by(Job.seq)
            .limit(1)
        )
    if body["resources"][0]["id"] != first:
        raise RuntimeError(f"the deep page starts at {body['resources'][0]['id']}, not at {first}")


def sensor_backlog(stack: DevStack, sizes: Sizes) -> list[dict[str, Any]]:
    """The data resources sensor against a backlog: `n` data resources land in one transaction; how long
    until all their jobs exist, and how long the sensor's ticks took meanwhile (Dagster's tick records)."""
    from bench.scenarios import burst_database

    points = []
    for n in sizes.backlogs:
        landed = time.time()
        result = burst_database(stack, n=n, timeout=600)
        ticks = _working_ticks(stack, since=landed)
        durations = [t["seconds"] for t in ticks]
        points.append(
            {
                "backlog": n,
                "all_jobs_claimable_s": result["all_jobs_claimable_s"],
                "ticks": len(ticks),
                "median_tick_s": _median(durations) if durations else None,
                "max_tick_s": round(max(durations), 2) if durations else None,
            }
        )
        print(f"  sensor backlog {n}: {points[-1]}", flush=True)
    return points


def _working_ticks(stack: DevStack, *, since: float) -> list[dict[str, Any]]:
    """The data resources sensor's finished ticks since `since` (epoch seconds) that made jobs."""
    from dagster import DagsterInstance
    from dagster._core.definitions.run_request import InstigatorType

    os.environ["NMDC_DAGSTER_DATABASE_URL"] = with_database(stack.database.url, "nmdc_dagster")
    time.sleep(6)  # the tick that made the last jobs records its end after them
    with DagsterInstance.from_config(str(stack.home / "dagster")) as instance:
        state = next(
            s
            for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if s.instigator_name == "data_resources_sensor"
        )
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=since, limit=1000)
    return [
        {"seconds": t.tick_data.end_timestamp - t.timestamp, "what": t.skip_reason}
        for t in ticks
        if t.tick_data.end_timestamp
        and (t.skip_reason or "made no job").startswith("made ")
        and not (t.skip_reason or "").startswith("made no job")
    ]
