"""`make bench`'s claim and listing scenarios at toy sizes, so that the benchmark's own code keeps working:
wrk against a live API (one uvicorn worker, as the bench starts it), the bare-FastAPI and psycopg2 baselines,
data built in SQL, the plans it keeps, and the curves it draws. The figures themselves mean nothing here.
Cost: 26-34 s in full runs of `make test` (three workers, two cores)."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bench import paths, plots
from bench.devstack import DevStack
from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"),
]

TOY = replace(
    paths.SMOKE,
    claims_per_run=3000,
    history=(300, 600),
    claimable_behind_history=25,
    claimable_many=300,
    deep_page=100,
)


def test_the_claim_and_listing_scenarios_run_and_report_every_key(
    settings: Settings, clean_database: Database, tmp_path: Path
):
    home = tmp_path / "home"
    home.mkdir()
    stack = DevStack("", "", clean_database, home, 0.0)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    started = time.monotonic()
    # The API `make dev` would run (its workers are found by their NMDC_HOME), for the full cycle.
    with paths.serve("api.main:app", paths.api_env(stack, metrics), tmp_path / "api.log") as (url, _):
        stack.api_url = url
        claims = paths.claim_suite(stack, TOY, work=tmp_path)
        history = paths.history_suite(stack, TOY, work=tmp_path)
    for key in (
        "claim_http_per_s",
        "claim_bare_fastapi_per_s",
        "claim_sql_per_s",
        "claim_http_vs_bare_ratio",
        "claim_cycles_per_s",
        "api_peak_rss_mb",
    ):
        assert claims[key] > 0, key
    for key in ("list_claimable_p99_ms_history", "list_jobs_p99_ms_1m", "list_jobs_deep_vs_first"):
        assert history[key] > 0, key
    assert all(
        point["jobs"] >= size and point["runtime_status_ms"] > 0 and point["count_by_status_ms"] > 0
        for point, size in zip(history["curve_history"], TOY.history, strict=True)
    )
    # What the database did during each cycle run: which statements a 1 s run catches varies, so only that the
    # sampler ran and that the counters saw the cycles' commits is checked.
    for activity in claims["cycles_database_activity"]:
        assert activity["samples"] > 0
        assert activity["counters"]["commits"] > 0 and activity["counters"]["wal_bytes"] > 0
        assert all(seen["backends"] > 0 and seen["statement"] for seen in activity["active"])
    # The kept plans are the union's: each capable workflow's unclaimed jobs, and the lapsed leases' jobs.
    plan = history["plans"]["history_first_page"]
    assert "ix_operations_open_lease" in plan and "Limit" in plan
    drawn = plots.draw(
        {
            "commit": "smoke",
            "curve_history": history["curve_history"],
            "curve_sensor_backlog": [
                {"backlog": 100, "all_jobs_claimable_s": 1.0, "median_tick_s": 0.2, "max_tick_s": 0.3}
            ],
        },
        tmp_path / "plots",
    )
    assert all(path.stat().st_size > 10_000 for path in drawn)
    assert time.monotonic() - started < 90
