"""Schedules: the one piece of work that runs on the clock as a Dagster run.

Everything latency-bound (making jobs, reaping leases, reporting executions) is a sensor that works inside
its tick; only the hourly health snapshot is a run, because its history of runs and metadata plots is the
point and an hour easily pays a run's start-up.
"""

from __future__ import annotations

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

from nmdc_runtime.dagster.assets import runtime_status

runtime_status_job = define_asset_job(
    "runtime_status_job",
    selection=AssetSelection.assets(runtime_status),
    description="Materialize runtime_status: a snapshot of the queue's health.",
)

runtime_status_schedule = ScheduleDefinition(
    name="runtime_status_hourly",
    job=runtime_status_job,
    cron_schedule="0 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Refresh runtime_status every hour.",
)

jobs = [runtime_status_job]
schedules = [runtime_status_schedule]
