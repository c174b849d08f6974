"""Sensors: data resources become jobs, lapsed leases are reaped, executions and ended operations show up
in the UI, and the queue's health is recorded and checked.

Why sensors that do the work in the tick, rather than sensors that request runs: making the jobs for a batch
of data resources is one SQL statement of a few milliseconds, while a Dagster run costs seconds of process
start-up on top of the daemon's 5-second sensor loop. The sensor therefore makes the jobs itself (set-based,
in batches, each batch its own transaction) and records what it made as runless materializations of the
external `jobs` asset (`SensorResult(asset_events=...)`): a job is claimable within one sensor loop of its
data resource's registration, and a burst of ten thousand registrations is a few statements, not ten
thousand runs.

Errors are never turned into "nothing new": a database outage raises, so the tick fails and the UI shows it.

What a tick shows. Dagster 1.13 gives a tick the status SUCCESS only when it requests runs; a tick that
records asset events, adds partitions or moves its cursor without requesting a run is SKIPPED, whatever it
did (`dagster._daemon.sensor`). So every tick here returns a skip reason that says what it did: "made 3 jobs
of stats for 3 data resources", "recorded 2 ended operations (1 failed, 1 succeeded)", "ended 1 lapsed
lease"; ticks with nothing to do say "idle: ..." and why. The UI shows that text on the tick's status tag
(hover) and in its details, and the GraphQL API as the tick's `skipReason`; the tick's logs repeat it.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AddDynamicPartitionsRequest,
    AssetMaterialization,
    AssetObservation,
    DagsterInvariantViolationError,
    DefaultSensorStatus,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from nmdc_runtime.dagster.assets import (
    EXECUTIONS,
    JOBS,
    OPERATIONS,
    RUNTIME_STATUS,
    runtime_status_figures,
    workflow_partitions,
)
from nmdc_runtime.dagster.checks import evaluate
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.services import maintenance as maintenance_service
from nmdc_runtime.services import pipeline as pipeline_service
from nmdc_runtime.store import pipeline as pipeline_store

DATA_RESOURCES_SENSOR = "data_resources_sensor"
EXECUTIONS_SENSOR = "executions_sensor"
OPERATIONS_SENSOR = "operations_sensor"
OPERATIONS_REAPER = "operations_reaper"
RUNTIME_HEALTH = "runtime_health"

SAMPLE_SIZE = 20
"""Ids named in one materialization's metadata; past this, counts and the first ids only."""
EXECUTIONS_PER_TICK = 500
"""Each execution (or ended operation) is one event in Dagster's log: bound what one tick writes."""
ERROR_TEXT_CHARS = 500
"""The longest error code or message of an operation shown in Dagster: sites write them."""
GAP_WINDOW = 1000
"""How far below the highest reported execution seq a not-yet-visible seq is still awaited."""
REAPER_LIMIT = 1000
SUMMARY_PARTS = 5
"""Workflows (or states) a tick's text names one by one; past this, how many more."""


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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _first(ids: list[str]) -> str:
    return ", ".join(ids[:SUMMARY_PARTS]) + (" ..." if len(ids) > SUMMARY_PARTS else "")


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

    def add(self, reason: str, rows: Iterable[pipeline_store.MatchedRow]) -> None:
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

    def summary(self, backfills: int) -> str:
        """What the tick did, for its tick history: "made 3 jobs of stats for 3 data resources"."""
        parts = [
            f"{_count(len(batch.job_ids), 'job')} of {workflow_id} for "
            f"{_count(len(set(batch.data_resource_ids)), 'data resource')}"
            + (" (backfill)" if reason == "backfill" else "")
            for (reason, workflow_id), batch in sorted(self.by_workflow.items())
        ]
        if len(parts) > SUMMARY_PARTS:
            parts[SUMMARY_PARTS:] = [f"{len(parts) - SUMMARY_PARTS} more workflow(s)"]
        if not parts:
            text = "made no job"
        elif len(parts) == 1:
            text = "made " + parts[0]
        else:
            text = f"made {_count(self.job_count, 'job')}: " + "; ".join(parts)
        matched = {
            dr
            for (reason, _), b in self.by_workflow.items()
            if reason != "backfill"
            for dr in b.data_resource_ids
        }
        unmatched = self.data_resources_seen - len(matched)
        if unmatched:
            text += f"; {_count(unmatched, 'new data resource')} matched no enabled workflow"
        if backfills and not self.job_count:
            text += f"; the backfill of {_count(backfills, 'workflow')} found nothing to make"
        return text

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
            pending = pipeline_store.workflows_needing_backfill(session)
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
        message = f"idle: no new data resources and no workflow to backfill (last seq matched: {last_seq})"
        if state == _matcher_state(int(cursor.get("seq", 0)), cursor.get("backfills") or {}):
            return SkipReason(message)
        return SensorResult(skip_reason=message, cursor=json.dumps(state))
    # A tick that records asset events but launches no run is SKIPPED in Dagster whatever it did, and the
    # skip reason is the only text the tick history shows: say there what the tick made.
    summary = made.summary(backfills=len(pending))
    context.log.info(f"{summary}; as {made.created_by}; last seq matched {last_seq}")
    workflows = made.workflows()
    return SensorResult(
        asset_events=made.events(),
        dynamic_partitions_requests=(
            [AddDynamicPartitionsRequest(workflow_partitions.name, workflows)] if workflows else None
        ),
        cursor=json.dumps(state),
        skip_reason=summary,
    )


def _execution_event(row: pipeline_store.ExecutionRow) -> AssetMaterialization:
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


def next_seq_cursor(high: int, gaps: Iterable[int], seen: Iterable[int]) -> tuple[int, list[int]]:
    """A feed's cursor after a tick that saw the seqs `seen`: (highest seq seen, seqs still awaited).

    A seq below the highest seen but not seen yet is a gap: a write that has not committed (sequence values
    commit out of order) or one that rolled back. Gaps are looked up again on later ticks, so a late commit is
    reported once it is visible; a gap more than `GAP_WINDOW` below the highest seq is given up as rolled back.
    """
    seen = set(seen)
    new_high = max([high, *seen])
    waiting = {g for g in gaps if g not in seen}
    waiting.update(s for s in range(max(high + 1, new_high - GAP_WINDOW + 1), new_high) if s not in seen)
    return new_high, sorted(g for g in waiting if g > new_high - GAP_WINDOW)


def _read_feed(raw: str | None) -> tuple[int, list[int]]:
    cursor = _read_cursor(raw)
    return int(cursor.get("seq", 0)), [int(g) for g in cursor.get("gaps", [])]


def _feed_cursor(high: int, gaps: list[int]) -> str:
    return json.dumps({"seq": high, **({"gaps": gaps} if gaps else {})})


def _report_feed(
    context: SensorEvaluationContext,
    runtime: RuntimeDatabase,
    *,
    fetch: Callable[..., list[Any]],
    seq: Callable[[Any], int],
    event: Callable[[Any], AssetMaterialization | AssetObservation],
    idle: str,
    summarize: Callable[[list[Any]], str],
) -> SkipReason | SensorResult:
    """One tick of a feed read by a number the database hands out (`seq`, `end_seq`): the rows above the
    cursor and the gaps it awaits become one asset event each, of their workflow's partition."""
    high, gaps = _read_feed(context.cursor)
    with runtime.session() as session:
        rows = fetch(session, after_seq=high, also_seqs=gaps, limit=EXECUTIONS_PER_TICK)
    new_high, new_gaps = next_seq_cursor(high, gaps, (seq(row) for row in rows))
    if not rows:
        awaiting = f"; awaiting {len(new_gaps)} uncommitted seq(s)" if new_gaps else ""
        return SkipReason(f"idle: {idle} (last seq reported: {high}{awaiting})")
    summary = summarize(rows)
    context.log.info(f"{summary}; last seq {new_high}")
    workflows = sorted({row.workflow_id for row in rows})
    return SensorResult(
        asset_events=[event(row) for row in rows],
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(workflow_partitions.name, workflows)],
        cursor=_feed_cursor(new_high, new_gaps),
        skip_reason=summary,
    )


def _tally(values: Iterable[str]) -> str:
    return ", ".join(f"{n} {value}" for value, n in sorted(Counter(values).items()))


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
    return _report_feed(
        context,
        runtime,
        fetch=pipeline_store.executions_after,
        seq=lambda row: row.seq,
        event=_execution_event,
        idle="no new executions",
        summarize=lambda rows: (
            f"reported {_count(len(rows), 'execution')} ({_tally(row.status for row in rows)}) "
            f"of {_count(len({row.workflow_id for row in rows}), 'workflow')}"
        ),
    )


def _operation_event(row: pipeline_store.OperationEnding) -> AssetObservation:
    # The error is what the holding site sent: only its code and a bounded message are shown.
    error = row.error if isinstance(row.error, dict) else {}
    code = str(error.get("code") or "")[:ERROR_TEXT_CHARS]
    message = str(error.get("message") or "")[:ERROR_TEXT_CHARS]
    attempt = f"attempt {row.attempt} of {row.max_attempts}"
    if row.result_execution_id:
        outcome = f"{row.state}, execution {row.result_execution_id}"
    else:
        outcome = f"{row.state}, {code}: {message}" if code else row.state
    description = f"operation {row.id} of job {row.job_id} at site {row.site_id}, {attempt}: {outcome}"
    if row.job_failed_for_good:
        description = f"JOB FAILED: job {row.job_id} has no attempt left; {description}"
    return AssetObservation(
        asset_key=OPERATIONS,
        partition=row.workflow_id,
        description=description,
        metadata={
            "operation_id": MetadataValue.text(row.id),
            "api_path": f"/operations/{row.id}",
            "job_id": row.job_id,
            "workflow_id": row.workflow_id,
            "site_id": row.site_id,
            "attempt": row.attempt,
            "max_attempts": row.max_attempts,
            "state": row.state,
            "error_code": code,
            "error_message": message,
            "execution_id": row.result_execution_id or "",
            "job_status": row.job_status,
            "job_failed_for_good": row.job_failed_for_good,
            "ended_at": row.ended_at.isoformat(),
            "end_seq": row.end_seq,
        },
    )


@sensor(
    name=OPERATIONS_SENSOR,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Records each operation that ends (succeeded, failed, expired, canceled) as an observation of the "
        "`operations` asset of its workflow. Cursor: the highest end_seq recorded and the lower ones not "
        "visible yet (end_seq numbers operations in the order they ended)."
    ),
)
def operations_sensor(context: SensorEvaluationContext, runtime: RuntimeDatabase):
    """Record operations that ended and were not recorded yet, in the order they ended (`end_seq`)."""

    def summarize(rows: list[pipeline_store.OperationEnding]) -> str:
        summary = f"recorded {_count(len(rows), 'ended operation')} ({_tally(row.state for row in rows)})"
        final = [row.job_id for row in rows if row.job_failed_for_good]
        if final:
            summary += f"; JOB FAILED, no attempt left: {_first(final)}"
        return summary

    return _report_feed(
        context,
        runtime,
        fetch=pipeline_store.operations_ended_after,
        seq=lambda row: row.end_seq,
        event=_operation_event,
        idle="no operation ended",
        summarize=summarize,
    )


@sensor(
    name=OPERATIONS_REAPER,
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Ends operations whose lease lapsed: expired (DEADLINE_EXCEEDED; the job goes back to unclaimed, or "
        "fails once its attempts are used up), or canceled (CANCELLED) when a cancel was requested. Deletes "
        "finished operations past their expire_time (executions are kept), forgets old Idempotency-Keys and folds "
        "the job and execution tallies' changes."
    ),
)
def operations_reaper(context: SensorEvaluationContext, runtime: RuntimeDatabase):
    """Apply the API's own lease and retention rules (`nmdc_runtime.services.maintenance`) on a clock."""
    now = datetime.now(UTC)
    policy = runtime.policy()
    with runtime.session() as session:
        expired = maintenance_service.reap_lapsed_leases(session, now=now, policy=policy, limit=REAPER_LIMIT)
    with runtime.session() as session:
        deleted = maintenance_service.delete_finished_operations(session, now=now, limit=REAPER_LIMIT)
    with runtime.session() as session:
        forgotten = maintenance_service.forget_idempotency_keys(session, now=now, policy=policy)
    # Bookkeeping, not news: left out of the summary, so an idle runtime's reaper still says idle.
    with runtime.session() as session:
        maintenance_service.fold_tally_changes(session)
    if not expired and not deleted and not forgotten:
        return SkipReason(
            "idle: no lapsed lease, no finished operation past its expire_time, no idempotency key past retention"
        )
    summary = (
        f"ended {_count(len(expired), 'lapsed lease')}, deleted {_count(deleted, 'finished operation')} past "
        f"expire_time, forgot {_count(forgotten, 'idempotency key')} past retention"
    )
    if expired:
        summary += f": {_first(expired)}"
    context.log.info(summary)
    return SkipReason(summary)


def runtime_health_sensor(minimum_interval_seconds: int) -> SensorDefinition:
    """The sensor that records `runtime_status` and evaluates the asset checks every
    `minimum_interval_seconds` (NMDC_HEALTH_INTERVAL_SECONDS), and at start-up: its first tick."""

    @sensor(
        name=RUNTIME_HEALTH,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Every {minimum_interval_seconds} s: records runtime_status (the queue's health, plotted on the "
            "asset's Plots tab) and evaluates the asset checks of jobs and operations, without a run."
        ),
    )
    def runtime_health(context: SensorEvaluationContext, runtime: RuntimeDatabase):
        figures = runtime_status_figures(runtime, now=datetime.now(UTC))
        findings = evaluate(figures, runtime)
        failing = [finding.spec.name for finding in findings if not finding.passed]
        summary = (
            f"recorded runtime_status ({figures['jobs_unclaimed']} unclaimed jobs, "
            f"{figures['open_operations']} open operations); checks: {len(findings) - len(failing)} passed"
            + (f", {len(failing)} failing: {', '.join(failing)}" if failing else "")
        )
        context.log.info(summary)
        return SensorResult(
            asset_events=[
                AssetMaterialization(RUNTIME_STATUS, description=summary, metadata=figures),
                *(finding.evaluation() for finding in findings),
            ],
            skip_reason=summary,
        )

    return runtime_health


sensors = [data_resources_sensor, executions_sensor, operations_sensor, operations_reaper]
"""The sensors of fixed cadence; `runtime_health_sensor` is built with its interval from the settings."""
