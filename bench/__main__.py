"""`make bench`: start `make dev` in a state folder of its own, run the scenarios, stop it, write the figures.

    python -m bench                      # everything: latency (20 samples), bursts of 10,000 (database, API)
    python -m bench --only latency --samples 10
    python -m bench --only burst-db --burst 10000
    python -m bench --only burst-api --client wrk --api-workers 2

Figures go to standard output and to bench/results/<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import scenarios
from bench.devstack import dev_stack, leftover_processes
from nmdc_runtime.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"latency_median_s": 8.0, "burst_all_claimable_s": 60.0}


def _api_workers(chosen: int | None) -> int:
    """The uvicorn worker count the dev stack runs with, for the results: chosen, inherited, or the default."""
    if chosen is not None:
        return chosen
    inherited = os.environ.get("NMDC_API_WORKERS")
    return int(inherited) if inherited else Settings.model_fields["api_workers"].default


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["latency", "burst-db", "burst-api"], action="append")
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
    args = parser.parse_args()
    chosen = args.only or ["latency", "burst-db", "burst-api"]

    home = Path(tempfile.mkdtemp(prefix="nmdc-bench-"))
    report: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
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
        time.sleep(1)
        report["left_running_after_sigterm"] = leftover_processes(home)
    finally:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results: {out}")
        if not report.get("left_running_after_sigterm"):
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"processes left running: {report['left_running_after_sigterm']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
