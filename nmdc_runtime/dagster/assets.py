"""What staff see in the Dagster UI: the jobs the sensor makes, the executions sites report, the operations
that end, and the queue's health.

`jobs`, `executions` and `operations` are *external* assets (`AssetSpec`s, nothing Dagster computes): the
sensors record events of them from inside a tick (`SensorResult(asset_events=...)`), which costs one row in
Dagster's event log instead of a run's start-up (seconds of process launch each). The jobs themselves are
made by SQL in the same tick; the asset events are the record of it.

Partitioning: `jobs` is partitioned by workflow, with a dynamic partitions definition whose keys are workflow
ids, added by the data resources sensor with each workflow's first jobs (so every partition is materialized).
Workflows are rows in the runtime database that staff create through the API at any time, so one asset per
workflow would need the code location reloaded for each new workflow; one partition per workflow needs
nothing, and the UI shows each workflow's jobs apart as well as all of them together. A partition per data
resource or per job would reach millions of partitions; the event metadata names those instead (all of them
for small batches, counts and a bounded sample for big ones).

`executions` and `operations` are not partitioned: Dagster counts only materializations towards a partition,
so a workflow whose jobs are still waiting, or whose operations can only be observed, would show as a
"missing" partition of them when nothing is wrong. Their events name the workflow in their description and
metadata (`workflow_id`).

What went well is an event of the asset, what went wrong a failing asset check, never a green event
(`nmdc_runtime.dagster.outcomes`): a succeeded execution is a materialization of `executions` (the data a site
made), a failed one a failing result of the check `execution_succeeded`; an operation that ended succeeded or
canceled is an **observation** of `operations` (a materialization would claim that data was made: the data an
operation makes is its execution), one that failed or expired a failing result of `operation_succeeded`,
whose description starts with "JOB FAILED" when the job has no attempt left. Their metadata names the job,
site, attempt, state, error code and message and the execution (`operation_id` is a text entry).

`runtime_status` is the queue's health: its figures are recorded as a materialization by the
`runtime_health` sensor at start-up and every `NMDC_HEALTH_INTERVAL_SECONDS` (no run: three short reads),
so its metadata plots are always fresh; staff may also materialize it from the UI, which runs the same reads
in a run. The asset checks (`nmdc_runtime.dagster.checks`) are evaluated from the same figures.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)

from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.domain.states import JobStatus, OperationState
from nmdc_runtime.store import drains as drains_store
from nmdc_runtime.store import pipeline as pipeline_store

GROUP = "nmdc_runtime"

workflow_partitions = DynamicPartitionsDefinition(name="workflows")
"""One partition of `jobs` per workflow id; the data resources sensor adds keys with a workflow's first jobs."""

JOBS = AssetKey("jobs")
EXECUTIONS = AssetKey("executions")
OPERATIONS = AssetKey("operations")
RUNTIME_STATUS = AssetKey("runtime_status")

WINDOW = timedelta(hours=1)
"""The recent past the health figures look back over: operations ended, jobs failed for good."""
INCOMPLETE_GROUPS_NAMED = 20
"""Groups waiting too long for inputs that the figures (and the check) name, oldest first."""

jobs_asset = AssetSpec(
    JOBS,
    description=(
        "Jobs made by the data_resources sensor: one per (enabled workflow, matching data resource), or, for a "
        "workflow with inputs by role, one per (workflow, complete group). Each materialization is one tick's "
        "jobs for one workflow (partition = workflow id); its metadata names the jobs and the data resources "
        "that triggered them, each job's group and inputs by role (`jobs`), and the tick that made them "
        "(Job.created_by)."
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
        "execution that succeeded, with its job, workflow, site, operation, outputs and API path. A failed "
        "execution is never a materialization: it is a failing result of the check execution_succeeded (Checks "
        "tab), naming it."
    ),
    group_name=GROUP,
    kinds={"postgres"},
)

operations_asset = AssetSpec(
    OPERATIONS,
    deps=[JOBS],
    description=(
        "Operations that ended: each observation is one operation that ended succeeded or canceled, with its "
        "job, workflow, site, attempt, state and execution. An operation that failed or expired is a failing "
        "result of the check operation_succeeded (Checks tab) instead, with its error and the execution its site "
        "recorded; 'JOB FAILED' first marks the one after which its job failed for good (no attempt left)."
    ),
    group_name=GROUP,
    kinds={"postgres"},
)

external_assets = [jobs_asset, executions_asset, operations_asset]


def _age_seconds(now: datetime, then: datetime | None) -> float:
    return round((now - then).total_seconds(), 1) if then is not None else 0.0


def runtime_status_figures(runtime: RuntimeDatabase, *, now: datetime) -> dict[str, Any]:
    """The queue's health as metadata: numbers for the plots (every job status and outcome always present,
    so each plot is a continuous line), and the job counts as one JSON entry."""
    with runtime.session() as session:
        status = pipeline_store.runtime_status(
            session,
            now=now,
            lease_grace=timedelta(seconds=runtime.settings.check_lapsed_lease_seconds),
            incomplete_group_grace=timedelta(seconds=runtime.settings.check_incomplete_group_seconds),
            window=WINDOW,
        )
        overdue_groups = (
            pipeline_store.incomplete_groups(
                session,
                before=now - timedelta(seconds=runtime.settings.check_incomplete_group_seconds),
                limit=INCOMPLETE_GROUPS_NAMED,
            )
            if status["incomplete_groups_overdue"]
            else []
        )
        drained = drains_store.drained_sites(session, drain_after=runtime.settings.site_drain_after)
    jobs_by_status = status["jobs_by_status"]
    ended = status["operations_ended_by_state"]
    failed = ended.get(OperationState.FAILED, 0) + ended.get(OperationState.EXPIRED, 0)
    # Canceled operations were released or stopped on purpose: neither a success nor a failure.
    ran = failed + ended.get(OperationState.SUCCEEDED, 0)
    figures: dict[str, Any] = {f"jobs_{s.value}": int(jobs_by_status.get(s.value, 0)) for s in JobStatus}
    figures.update(
        unmatched_data_resources=int(status["unmatched_data_resources"]),
        oldest_unmatched_data_resource_age_seconds=_age_seconds(
            now, status["oldest_unmatched_data_resource"]
        ),
        pending_backfills=int(status["pending_backfills"]),
        oldest_unclaimed_job_age_seconds=_age_seconds(now, status["oldest_unclaimed_job"]),
        open_operations=int(status["open_operations"]),
        lapsed_leases=int(status["lapsed_leases"]),
        lapsed_leases_overdue=int(status["lapsed_leases_overdue"]),
        executions=int(status["executions"]),
        operations_ended_last_hour=int(sum(ended.values())),
        operations_failed_last_hour=int(failed),
        failed_operations_share_last_hour=round(failed / ran, 4) if ran else 0.0,
        jobs_failed_for_good_last_hour=int(status["jobs_failed_for_good"]),
        incomplete_groups=int(status["incomplete_groups"]),
        incomplete_groups_overdue=int(status["incomplete_groups_overdue"]),
        oldest_incomplete_group_age_seconds=_age_seconds(now, status["oldest_incomplete_group"]),
        drained_sites=len(drained),
        drained_site_ids=", ".join(drained),
    )
    figures["jobs_by_status"] = MetadataValue.json(jobs_by_status)
    figures["incomplete_groups_overdue_named"] = MetadataValue.json(
        [
            {
                "workflow_id": g.workflow_id,
                "group": g.group,
                "missing": g.missing,
                "filled": g.filled,
                "waiting_since": g.since.isoformat(),
            }
            for g in overdue_groups
        ]
    )
    return figures


@asset(
    group_name=GROUP,
    kinds={"postgres"},
    description=(
        "Queue health: jobs per status, data resources waiting for the sensor and the oldest one's age, "
        "workflows waiting for a backfill, groups waiting for inputs of a workflow with inputs by role, open "
        "operations and lapsed leases, the oldest unclaimed job's age, "
        "and the operations that ended in the last hour (failed share, jobs failed for good). Recorded by "
        "the runtime_health sensor at start-up and every NMDC_HEALTH_INTERVAL_SECONDS; see the Plots tab."
    ),
)
def runtime_status(
    context: AssetExecutionContext, runtime: ResourceParam[RuntimeDatabase]
) -> MaterializeResult:
    """Count what is waiting where, so a stuck queue shows on the asset's metadata plots."""
    figures = runtime_status_figures(runtime, now=datetime.now(UTC))
    context.log.info(f"runtime status: {figures}")
    return MaterializeResult(metadata=figures)
