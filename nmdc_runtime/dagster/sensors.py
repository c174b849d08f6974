"""Sensors: data resources become jobs, lapsed leases are reaped, executions show up in the UI.

Why sensors that do the work in the tick, rather than sensors that request runs: making the jobs for a batch
of data resources is one SQL statement of a few milliseconds, while a Dagster run costs seconds of process
start-up on top of the daemon's 5-second sensor loop. The sensor therefore makes the jobs itself (set-based,
in batches, each batch its own transaction) and records what it made as runless materializations of the
external `jobs` asset (`SensorResult(asset_events=...)`): a job is claimable within one sensor loop of its
data resource's registration, and a burst of ten thousand registrations is a few statements, not ten
thousand runs.

Errors are never turned into "nothing new": a database outage raises, so the tick fails and the UI shows it.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AddDynamicPartitionsRequest,
    AssetMaterialization,
    DagsterInvariantViolationError,
    DefaultSensorStatus,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from nmdc_runtime.dagster.assets import EXECUTIONS, JOBS, workflow_partitions
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.services import maintenance
from nmdc_runtime.services import pipeline as pipeline_service
from nmdc_runtime.store import pipeline

DATA_RESOURCES_SENSOR = "data_resources_sensor"
EXECUTIONS_SENSOR = "executions_sensor"
OPERATIONS_REAPER = "operations_reaper"

SAMPLE_SIZE = 20
"""Ids named in one materialization's metadata; past this, counts and the first ids only."""
EXECUTIONS_PER_TICK = 500
"""Each execution is one event in Dagster's log: bound what one tick writes."""
GAP_WINDOW = 1000
"""How far below the highest reported execution seq a not-yet-visible seq is still awaited."""
REAPER_LIMIT = 1000


def tick_label(context: SensorEvaluationContext, sensor_name: str) -> str:
    """Who made something, for `Job.created_by`: `dagster:sensor:<name>:tick:<tick id>`.

    Under the daemon the tick id is the last part of the context's log key (`[repository, sensor,
    tick id]`); a sensor evaluated elsewhere (a test, `dagster sensor preview`) has none and is named by its
    cursor instead.
    """
    key = context.log_key
    if key and len(key) == 3 and str(key[-1]).isdigit():
        return f"dagster:sensor:{sensor_name}:tick:{key[-1]}"
    return f"dagster:sensor:{sensor_name}:cursor:{context.cursor or ''}"


def _read_cursor(raw: str | None) -> dict[str, Any]:
    # A cursor edited by hand in the UI may be anything: correctness never depends on it, so start afresh.
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if isinstance(value, int):
        return {"seq": value}
    return value if isinstance(value, dict) else {}


def _ids(values: list[str]) -> MetadataValue:
    return MetadataValue.json(values[:SAMPLE_SIZE])


@dataclass
class _WorkflowBatch:
    job_ids: list[str] = field(default_factory=list)
    data_resource_ids: list[str] = field(default_factory=list)


@dataclass
class _JobsMade:
    """The jobs one tick made, per (reason, workflow), for the asset events."""

    created_by: str
    by_workflow: dict[tuple[str, str], _WorkflowBatch] = field(
        default_factory=lambda: defaultdict(_WorkflowBatch)
    )
    data_resources_seen: int = 0

    def add(self, reason: str, rows: Iterable[pipeline.MatchedRow]) -> None:
        for row in rows:
            if row.job_id is None:
                continue
            batch = self.by_workflow[(reason, row.workflow_id)]
            batch.job_ids.append(row.job_id)
            batch.data_resource_ids.append(row.data_resource_id)

    @property
    def job_count(self) -> int:
        return sum(len(b.job_ids) for b in self.by_workflow.values())

    def workflows(self) -> list[str]:
        return sorted({workflow_id for _, workflow_id in self.by_workflow})

    def events(self) -> list[AssetMaterialization]:
        events = []
        for (reason, workflow_id), batch in sorted(self.by_workflow.items()):
            count = len(batch.job_ids)
            events.append(
                AssetMaterialization(
                    asset_key=JOBS,
                    partition=workflow_id,
                    description=f"{count} job(s) of workflow {workflow_id} for {reason}",
                    metadata={
                        "workflow_id": workflow_id,
                        "reason": reason,
                        "jobs_created": count,
                        "data_resources": len(set(batch.data_resource_ids)),
                        "job_ids": _ids(batch.job_ids),
                        "data_resource_ids": _ids(batch.data_resource_ids),
                        "ids_complete": count <= SAMPLE_SIZE,
                        "created_by": self.created_by,
                    },
                )
            )
        return events


def _report_committed(context: SensorEvaluationContext, events: list[AssetMaterialization]) -> None:
    # Batches committed before the error are real jobs: record them even though the tick fails.
    if not events:
        return
    try:
        instance = context.instance
    except DagsterInvariantViolationError:
        return  # evaluated without an instance (a test): nowhere to record them
    for event in events:
        instance.report_runless_asset_event(event)


def _matcher_state(seq: int, backfills: dict[str, Any]) -> dict[str, Any]:
    return {"seq": seq, **({"backfills": backfills} if backfills else {})}


@sensor(
    name=DATA_RESOURCES_SENSOR,
    minimum_interval_seconds=1,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Makes one job per enabled workflow whose data_types contain a new data resource's data_type, and "
        "backfills workflows created, re-enabled or changed later. Cursor: the last data resource seq matched."
    ),
)
def data_resources_sensor(context: SensorEvaluationContext, runtime: RuntimeDatabase):
    """Match unmatched data resources (queue: `matched_at IS NULL`, in seq order), then run pending backfills.

    The cursor is informational (the last seq matched, and backfill progress): the queue is the
    `matched_at` column, because sequence values can commit out of order and a `seq > cursor` scan would
    skip a row that commits late. Replays and a cursor moved back make no duplicates: the unique index
    `uq_jobs_workflow_trigger` and `ON CONFLICT DO NOTHING` see to it.
    """
    started = time.monotonic()
    cursor = _read_cursor(context.cursor)
    last_seq = int(cursor.get("seq", 0))
    backfills: dict[str, Any] = dict(cursor.get("backfills", {}))
    made = _JobsMade(created_by=tick_label(context, DATA_RESOURCES_SENSOR))
    max_attempts = runtime.max_attempts
    batch_size = runtime.batch_size

    def in_budget() -> bool:
        return time.monotonic() - started < runtime.tick_budget_seconds

    try:
        # Each loop runs at least one batch, so every tick makes progress however long a batch takes.
        while True:
            with runtime.session() as session:
                rows = pipeline_service.match_new_data_resources(
                    session, limit=batch_size, max_attempts=max_attempts, created_by=made.created_by
                )
            seen = {row.data_resource_id for row in rows}
            made.data_resources_seen += len(seen)
            made.add("new data resources", rows)
            if rows:
                last_seq = max(last_seq, max(row.seq for row in rows))
            if len(seen) < batch_size or not in_budget():
                break

        with runtime.session() as session:
            pending = pipeline.workflows_needing_backfill(session)
        # Progress of workflows no longer waiting (finished elsewhere, disabled) is dropped.
        backfills = {k: v for k, v in backfills.items() if k in {b.workflow_id for b in pending}}
        for backfill in pending:
            version = backfill.updated_at.isoformat()
            progress = backfills.get(backfill.workflow_id)
            # Resume a backfill a previous tick ran out of time on, unless the workflow changed since.
            after_seq = int(progress[1]) if progress and progress[0] == version else 0
            finished = False
            while True:
                with runtime.session() as session:
                    rows, finished = pipeline_service.backfill_workflow(
                        session,
                        workflow_id=backfill.workflow_id,
                        updated_at=backfill.updated_at,
                        after_seq=after_seq,
                        limit=batch_size,
                        max_attempts=max_attempts,
                        created_by=made.created_by,
                    )
                made.add("backfill", rows)
                if rows:
                    after_seq = max(row.seq for row in rows)
                # A short batch is the last: `finished` says whether it was recorded (False when the
                # workflow changed meanwhile; then the next tick starts it again).
                if len({row.data_resource_id for row in rows}) < batch_size or not in_budget():
                    break
            if finished:
                backfills.pop(backfill.workflow_id, None)
            else:
                backfills[backfill.workflow_id] = [version, after_seq]
            if not in_budget():
                break
    except Exception:
        _report_committed(context, made.events())
        raise

    state = _matcher_state(last_seq, backfills)
    if not made.job_count and not made.data_resources_seen and not pending:
        message = f"no new data resources and no workflow to backfill (last seq matched: {last_seq})"
        if state == _matcher_state(int(cursor.get("seq", 0)), cursor.get("backfills") or {}):
            return SkipReason(message)
        return SensorResult(skip_reason=message, cursor=json.dumps(state))
    new_cursor = json.dumps(state)
    context.log.info(
        f"matched {made.data_resources_seen} new data resource(s), backfilled {len(pending)} workflow(s): "
        f"{made.job_count} job(s) made as {made.created_by}; last seq matched {last_seq}"
    )
    for (reason, workflow_id), batch in sorted(made.by_workflow.items()):
        context.log.info(f"workflow {workflow_id}: {len(batch.job_ids)} job(s) for {reason}")
    workflows = made.workflows()
    return SensorResult(
        asset_events=made.events(),
        dynamic_partitions_requests=(
            [AddDynamicPartitionsRequest(workflow_partitions.name, workflows)] if workflows else None
        ),
        cursor=new_cursor,
    )


def _execution_event(row: pipeline.ExecutionRow) -> AssetMaterialization:
    path = f"/jobs/{row.job_id}/executions/{row.id}"
    return AssetMaterialization(
        asset_key=EXECUTIONS,
        partition=row.workflow_id,
        description=f"execution {row.id} of job {row.job_id} by site {row.site_id}: {row.status}",
        metadata={
            "execution_id": row.id,
            "api_path": path,
            "job_id": row.job_id,
            "workflow_id": row.workflow_id,
            "site_id": row.site_id,
            "operation_id": row.operation_id,
            "status": row.status,
            "started_at": row.started_at.isoformat(),
            "ended_at": row.ended_at.isoformat(),
            "outputs": MetadataValue.json(row.output_ids),
            "output_count": len(row.output_ids),
            "seq": row.seq,
        },
    )


def next_execution_cursor(high: int, gaps: Iterable[int], seen: Iterable[int]) -> tuple[int, list[int]]:
    """The executions cursor after a tick that saw the seqs `seen`: (highest seq seen, seqs still awaited).

    A seq below the highest seen but not seen yet is a gap: an insert that has not committed (sequence values
    commit out of order) or one that rolled back. Gaps are looked up again on later ticks, so a late commit is
    reported once it is visible; a gap more than `GAP_WINDOW` below the highest seq is given up as rolled back.
    """
    seen = set(seen)
    new_high = max([high, *seen])
    waiting = {g for g in gaps if g not in seen}
    waiting.update(s for s in range(max(high + 1, new_high - GAP_WINDOW + 1), new_high) if s not in seen)
    return new_high, sorted(g for g in waiting if g > new_high - GAP_WINDOW)


@sensor(
    name=EXECUTIONS_SENSOR,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Records each execution a site registers as a materialization of the `executions` asset. Cursor: "
        "the highest execution seq reported and the lower seqs not visible yet."
    ),
)
def executions_sensor(context: SensorEvaluationContext, runtime: RuntimeDatabase):
    """Report executions not reported yet: `seq` above the cursor, or a gap the cursor still awaits."""
    cursor = _read_cursor(context.cursor)
    high = int(cursor.get("seq", 0))
    gaps = [int(g) for g in cursor.get("gaps", [])]
    with runtime.session() as session:
        rows = pipeline.executions_after(session, after_seq=high, also_seqs=gaps, limit=EXECUTIONS_PER_TICK)
    new_high, new_gaps = next_execution_cursor(high, gaps, (row.seq for row in rows))
    new_cursor = json.dumps({"seq": new_high, **({"gaps": new_gaps} if new_gaps else {})})
    if not rows:
        return SkipReason(
            f"no new executions (last seq reported: {high}"
            + (f"; awaiting {len(new_gaps)} uncommitted seq(s))" if new_gaps else ")")
        )
    workflows = sorted({row.workflow_id for row in rows})
    context.log.info(
        f"reported {len(rows)} execution(s) of {len(workflows)} workflow(s); last seq {new_high}"
    )
    return SensorResult(
        asset_events=[_execution_event(row) for row in rows],
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(workflow_partitions.name, workflows)],
        cursor=new_cursor,
    )


@sensor(
    name=OPERATIONS_REAPER,
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Ends operations whose lease lapsed: expired (DEADLINE_EXCEEDED; the job goes back to unclaimed, or "
        "fails once its attempts are used up), or canceled (CANCELLED) when a cancel was requested. Deletes "
        "finished operations past their expire_time (executions are kept) and forgets old Idempotency-Keys."
    ),
)
def operations_reaper(context: SensorEvaluationContext, runtime: RuntimeDatabase):
    """Apply the API's own lease and retention rules (`nmdc_runtime.services.maintenance`) on a clock."""
    now = datetime.now(UTC)
    policy = runtime.policy()
    with runtime.session() as session:
        expired = maintenance.reap_lapsed_leases(session, now=now, policy=policy, limit=REAPER_LIMIT)
    with runtime.session() as session:
        deleted = maintenance.delete_finished_operations(session, now=now, limit=REAPER_LIMIT)
    with runtime.session() as session:
        forgotten = maintenance.forget_idempotency_keys(session, now=now, policy=policy)
    if not expired and not deleted and not forgotten:
        return SkipReason(
            "0 lapsed leases ended, 0 finished operations deleted, 0 idempotency keys forgotten"
        )
    context.log.info(
        f"{len(expired)} lapsed lease(s) ended, {deleted} finished operation(s) past expire_time deleted, "
        f"{forgotten} idempotency key(s) past retention forgotten"
    )
    if expired:
        shown = ", ".join(expired[:SAMPLE_SIZE])
        context.log.info(f"ended: {shown}" + (" ..." if len(expired) > SAMPLE_SIZE else ""))
    return None


sensors = [data_resources_sensor, executions_sensor, operations_reaper]
