"""What staff see in the Dagster UI: the jobs the sensor makes and the executions sites report.

Both are *external* assets (`AssetSpec`s, nothing Dagster computes): the sensors record materializations of
them from inside a tick (`SensorResult(asset_events=...)`), which costs one row in Dagster's event log
instead of a run's start-up (seconds of process launch each). The jobs themselves are made by SQL in the
same tick; the asset events are the record of it.

Partitioning: both assets are partitioned by workflow, with a dynamic partitions definition whose keys are
workflow ids, added by the sensors as workflows appear. Workflows are rows in the runtime database that
staff create through the API at any time, so one asset per workflow would need the code location reloaded
for each new workflow; one partition per workflow needs nothing, and the UI still shows each workflow's
history apart (the partition view of `jobs`, filtered by workflow) as well as all of it together. A
partition per data resource or per job would reach millions of partitions; the materialization metadata
names those instead (all of them for small batches, counts and a bounded sample for big ones).

`runtime_status` is the one asset Dagster computes: a snapshot of the queue's health, refreshed by a schedule
(hourly; staff can materialize it from the UI at any time).
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.store import pipeline

GROUP = "nmdc_runtime"

workflow_partitions = DynamicPartitionsDefinition(name="workflows")
"""One partition per workflow id; the sensors add keys as they first make or see something for a workflow."""

JOBS = AssetKey("jobs")
EXECUTIONS = AssetKey("executions")

jobs_asset = AssetSpec(
    JOBS,
    description=(
        "Jobs made by the data_resources sensor: one per (enabled workflow, matching data resource). Each "
        "materialization is one tick's jobs for one workflow (partition = workflow id); its metadata names "
        "the jobs and the data resources that triggered them, and the tick that made them (Job.created_by)."
    ),
    partitions_def=workflow_partitions,
    group_name=GROUP,
    kinds={"postgres"},
)

executions_asset = AssetSpec(
    EXECUTIONS,
    deps=[JOBS],
    description=(
        "Executions registered by executing sites (POST /jobs/{job_id}/executions). Each materialization is one "
        "execution of a job of that workflow (partition = workflow id), with its job, site, operation, status, "
        "outputs and API path."
    ),
    partitions_def=workflow_partitions,
    group_name=GROUP,
    kinds={"postgres"},
)

external_assets = [jobs_asset, executions_asset]


@asset(
    group_name=GROUP,
    kinds={"postgres"},
    description=(
        "Queue health: jobs per status, data resources waiting for the sensor, workflows waiting for a "
        "backfill, open operations and lapsed leases, the oldest unclaimed job."
    ),
)
def runtime_status(context: AssetExecutionContext, runtime: RuntimeDatabase) -> MaterializeResult:
    """Count what is waiting where, so a stuck queue shows on the asset's metadata plots."""
    now = datetime.now(UTC)
    with runtime.session() as session:
        status = pipeline.runtime_status(session, now=now)
    oldest = status.pop("oldest_unclaimed_job")
    jobs_by_status = status.pop("jobs_by_status")
    metadata = {f"jobs_{name}": int(count) for name, count in sorted(jobs_by_status.items())}
    metadata.update({name: int(value) for name, value in status.items()})
    metadata["jobs_by_status"] = MetadataValue.json(jobs_by_status)
    metadata["oldest_unclaimed_job_age_seconds"] = (
        round((now - oldest).total_seconds(), 1) if oldest is not None else 0.0
    )
    context.log.info(f"runtime status: {metadata}")
    return MaterializeResult(metadata=metadata)
