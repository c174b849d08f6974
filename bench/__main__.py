"""`make bench`: start `make dev` in a state folder of its own, run the scenarios, stop it, write the figures.

    python -m bench                      # everything (bench/README.md)
    python -m bench --only latency --samples 10
    python -m bench --only burst-db --burst 10000
    python -m bench --only burst-api --client wrk --api-workers 2
    python -m bench --only claims --profile-to bench/claim-after.svg --profile-cycle-to bench/cycle.svg
    python -m bench --only history --profile-listing-to bench/listing.svg
    python -m bench --only history
    python -m bench --only groups-latency --only groups-burst
    python -m bench --smoke              # every scenario at toy sizes, in about a minute

Figures go to standard output and to bench/results/<UTC time>.json; a run of every scenario also writes
bench/results/latest.json (the keys of bench/README.md, and the commit measured) and the curves (PNG).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import groups, paths, plots, scenarios
from bench.devstack import REPO, dev_stack, leftover_processes
from nmdc_runtime.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "latency_median_s": 8.0,
    "burst_all_claimable_s": 60.0,
    "claim_http_vs_bare_ratio": 0.7,
    "claim_cycles_per_s": 100,
    "list_claimable_p99_ms_history": 50,
    "list_jobs_p99_ms_1m": 50,
    "list_jobs_deep_vs_first": 1.5,
    "api_peak_rss_mb": 300,
    "groups_data_to_job_p50_s": 8.0,
    "groups_burst_10k_s": 60.0,
}
SCENARIOS = [
    "latency",
    "burst-db",
    "burst-api",
    "sensor-backlog",
    "claims",
    "history",
    "groups-latency",
    "groups-burst",
]


def _commit() -> str:
    """The commit measured, with `+dirty` when the working tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    ).stdout
    return head.strip() + ("+dirty" if dirty.strip() else "")


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summary(report: dict) -> dict:
    """The keys of bench/README.md's table, flat, from a report of every scenario."""
    claims, listed = report["claims"], report["history"]
    return {
        "commit": report["commit"],
        "when": report["when"],
        "load_average_at_start": report["load_average_at_start"],
        **{k: v for k, v in claims.items() if k != "runs"},
        **{k: v for k, v in listed.items() if k not in ("curve_history", "plans")},
        "data_to_job_p50_s": report["latency"]["median_s"],
        "sensor_burst_10k_s": report["burst_api"]["first_post_to_all_jobs_claimable_s"],
        "groups_data_to_job_p50_s": report["groups_latency"]["median_s"],
        "groups_burst_10k_s": report["groups_burst"]["all_jobs_claimable_s"],
        "curve_history": listed["curve_history"],
        "curve_sensor_backlog": report["sensor_backlog"],
        "targets": TARGETS,
    }


def _api_workers(chosen: int | None) -> int:
    """The uvicorn worker count the dev stack runs with, for the results: chosen, inherited, or the default."""
    if chosen is not None:
        return chosen
    inherited = os.environ.get("NMDC_API_WORKERS")
    return int(inherited) if inherited else Settings.model_fields["api_workers"].default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SCENARIOS, action="append")
    parser.add_argument(
        "--smoke", action="store_true", help="every scenario at toy sizes (make test runs it)"
    )
    parser.add_argument("--profile-to", type=Path, help="claims: a py-spy flame graph of the claim (SVG)")
    parser.add_argument(
        "--profile-cycle-to",
        type=Path,
        help="claims: a py-spy flame graph of the claim → execution → finish cycle",
    )
    parser.add_argument(
        "--profile-listing-to",
        type=Path,
        help="history: a py-spy flame graph of the claimable listing behind the largest history",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the figures go")
    parser.add_argument("--samples", type=int, default=20, help="latency samples")
    parser.add_argument("--burst", type=int, default=10_000, help="data resources per burst")
    parser.add_argument("--concurrency", type=int, default=16, help="API clients in the API burst")
    parser.add_argument(
        "--client",
        choices=scenarios.CLIENTS,
        default=scenarios.default_client(),
        help="load generator of the API burst (default: wrk if installed, else httpx)",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        help="NMDC_API_WORKERS (uvicorn processes) for the dev stack; default: the setting's own default",
    )
    args = parser.parse_args(argv)
    chosen = args.only or SCENARIOS
    sizes = paths.SMOKE if args.smoke else paths.Sizes()
    if args.smoke:
        args.samples, args.burst = min(args.samples, 2), min(args.burst, 200)

    began = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="nmdc-bench-"))
    report: dict = {
        "commit": _commit(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": _load_average(),
        "smoke": args.smoke,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "targets": TARGETS,
        "api_workers": _api_workers(args.api_workers),
    }
    try:
        with dev_stack(home / "nmdc", home / "make-dev.log", api_workers=args.api_workers) as stack:
            report["make_dev_ready_s"] = round(stack.started_in, 1)
            print(
                f"make dev ready in {stack.started_in:.1f} s with {report['api_workers']} API worker(s)"
                f" (state in {stack.home})",
                flush=True,
            )
            # First, while the tables are empty: its sizes are the jobs in the table, and the later scenarios
            # then run against that history, as a system that has been up for a while does.
            if "history" in chosen:
                print(f"history: {sizes.history} jobs, then {sizes.claimable_many} claimable", flush=True)
                report["history"] = paths.history_suite(
                    stack, sizes, work=home, profile_listing_to=args.profile_listing_to
                )
                shown = {k: v for k, v in report["history"].items() if k not in ("curve_history", "plans")}
                print(f"  -> {json.dumps(shown)}", flush=True)
            if "latency" in chosen:
                print(f"latency: {args.samples} registrations, one at a time", flush=True)
                report["latency"] = scenarios.latency(stack, samples=args.samples).summary()
                print(f"  -> {json.dumps({k: v for k, v in report['latency'].items() if k != 'samples_s'})}")
            if "burst-db" in chosen:
                print(f"burst-db: {args.burst} data resources in one transaction", flush=True)
                report["burst_db"] = scenarios.burst_database(stack, n=args.burst)
                print(f"  -> {json.dumps(report['burst_db'])}", flush=True)
            if "burst-api" in chosen:
                print(
                    f"burst-api: {args.burst} POST /data_resources, {args.concurrency} at a time,"
                    f" client {args.client}",
                    flush=True,
                )
                report["burst_api"] = scenarios.burst_api(
                    stack, n=args.burst, concurrency=args.concurrency, client=args.client
                )
                shown = {k: v for k, v in report["burst_api"].items() if k != "wrk_output"}
                print(f"  -> {json.dumps(shown)}", flush=True)
            if "sensor-backlog" in chosen:
                print(f"sensor-backlog: {sizes.backlogs} data resources, each in one transaction", flush=True)
                report["sensor_backlog"] = paths.sensor_backlog(stack, sizes)
            if "groups-latency" in chosen:
                print(f"groups-latency: {args.samples} groups of two inputs, one at a time", flush=True)
                report["groups_latency"] = groups.latency(stack, samples=args.samples).summary()
                shown = {k: v for k, v in report["groups_latency"].items() if k != "samples_s"}
                print(f"  -> {json.dumps(shown)}", flush=True)
            if "groups-burst" in chosen:
                print(f"groups-burst: {args.burst} groups of two inputs in one transaction", flush=True)
                report["groups_burst"] = groups.burst(stack, n=args.burst)
                print(f"  -> {json.dumps(report['groups_burst'])}", flush=True)
            if "claims" in chosen:
                print(f"claims: HTTP, bare FastAPI, psycopg2; cycles; {sizes.repeats} runs each", flush=True)
                report["claims"] = paths.claim_suite(
                    stack,
                    sizes,
                    work=home,
                    profile_to=args.profile_to,
                    profile_cycle_to=args.profile_cycle_to,
                )
                print(f"  -> {json.dumps(report['claims'])}", flush=True)
        time.sleep(1)
        report["left_running_after_sigterm"] = leftover_processes(home)
        report["load_average_at_end"] = _load_average()
        report["took_s"] = round(time.monotonic() - began, 1)
        if set(chosen) == set(SCENARIOS):
            latest = summary(report)
            name = "smoke.json" if args.smoke else "latest.json"
            (args.results / name).parent.mkdir(parents=True, exist_ok=True)
            (args.results / name).write_text(json.dumps(latest, indent=2) + "\n")
            plots.draw(latest, args.results / ("smoke" if args.smoke else ""))
            print(f"summary: {args.results / name}")
    finally:
        args.results.mkdir(parents=True, exist_ok=True)
        out = (
            args.results
            / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}{'-smoke' if args.smoke else ''}.json"
        )
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results: {out}")
        if not report.get("left_running_after_sigterm"):
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"processes left running: {report['left_running_after_sigterm']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
