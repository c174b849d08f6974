"""The data resources sensor: new data resources become jobs, and workflows created, re-enabled or changed get
jobs for the data they accept (backfills)."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AddDynamicPartitionsRequest,
    AssetMaterialization,
    AssetSelection,
    MetadataValue,
    ResourceParam,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
)

from nmdc_runtime.dagster.assets import JOBS, workflow_partitions
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.ticks import (
    SAMPLE_SIZE,
    SUMMARY_PARTS,
    count,
    read_cursor,
    report_committed,
    runtime_sensor,
    sample,
    tick_label,
)
from nmdc_runtime.services import pipeline as pipeline_service
from nmdc_runtime.store import pipeline as pipeline_store

DATA_RESOURCES_SENSOR = "data_resources_sensor"
DESCRIPTION = (
    "Makes one job per enabled workflow whose data_types contain a new data resource's data_type (for a "
    "workflow with inputs by role: one job per group once the group has every required role), and backfills "
    "workflows created, re-enabled or changed later. What it made: the jobs asset's Events tab, one "
    "materialization per workflow and tick (created_by names the tick). Every tick shows as skipped, since it "
    "launches no run; the ones that made jobs say so. Cursor: the last data resource seq matched."
)
"""What the UI says of the sensor."""


@dataclass
class MatcherCursor:
    """The sensor's cursor, for people to read: the last data resource seq matched, and the backfills a tick
    ran out of time on (`{workflow id: [its updated_at, the last seq done]}`). The queue itself is the
    `matched_at` column, so whatever the cursor says, nothing is skipped or made twice."""

    seq: int = 0
    backfills: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, raw: str | None) -> "MatcherCursor":
        cursor = read_cursor(raw)
        return cls(int(cursor.get("seq", 0)), dict(cursor.get("backfills") or {}))

    def dump(self) -> str:
        return json.dumps({"seq": self.seq, **({"backfills": self.backfills} if self.backfills else {})})


@dataclass
class _WorkflowBatch:
    job_ids: list[str] = field(default_factory=list)
    data_resource_ids: list[str] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    """Each job's group and inputs by role, when it has either."""
    groups: set[str] = field(default_factory=set)
    """The groups of a workflow with inputs by role that got their job."""


@dataclass
class _JobsMade:
    """The jobs one tick made, per (reason, workflow), for the asset events."""

    created_by: str
    by_workflow: dict[tuple[str, str], _WorkflowBatch] = field(
        default_factory=lambda: defaultdict(_WorkflowBatch)
    )
    data_resources_seen: int = 0
    data_resources_for_groups: set[str] = field(default_factory=set)
    """New data resources matched as inputs of their groups, complete or not."""

    def add(self, reason: str, made: pipeline_store.Batch) -> None:
        for row in made.rows:
            if row.fills_role:
                self.data_resources_for_groups.add(row.data_resource_id)
            if row.job_id is None:
                continue
            batch = self.by_workflow[(reason, row.workflow_id)]
            batch.job_ids.append(row.job_id)
            batch.data_resource_ids.append(row.data_resource_id)
            if row.group is not None:
                batch.jobs.append({"job_id": row.job_id, "group": row.group})
        for job in made.group_jobs:
            batch = self.by_workflow[(reason, job.workflow_id)]
            batch.job_ids.append(job.job_id)
            batch.data_resource_ids.extend(job.inputs.values())
            batch.groups.add(job.group)
            batch.jobs.append({"job_id": job.job_id, "group": job.group, "inputs": job.inputs})

    @property
    def job_count(self) -> int:
        return sum(len(b.job_ids) for b in self.by_workflow.values())

    def workflows(self) -> list[str]:
        return sorted({workflow_id for _, workflow_id in self.by_workflow})

    def summary(self, backfills: int) -> str:
        """What the tick did, for its tick history: "made 3 jobs of stats for 3 data resources"."""
        parts = [
            f"{count(len(batch.job_ids), 'job')} of {workflow_id} for "
            + (
                count(len(batch.groups), "group")
                if batch.groups
                else count(len(set(batch.data_resource_ids)), "data resource")
            )
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
            text = f"made {count(self.job_count, 'job')}: " + "; ".join(parts)
        matched = {
            dr
            for (reason, _), b in self.by_workflow.items()
            if reason != "backfill" and not b.groups
            for dr in b.data_resource_ids
        }
        unmatched = self.data_resources_seen - len(matched | self.data_resources_for_groups)
        if unmatched:
            text += f"; {count(unmatched, 'new data resource')} matched no enabled workflow"
        if backfills and not self.job_count:
            text += f"; the backfill of {count(backfills, 'workflow')} found nothing to make"
        return text

    def events(self) -> list[AssetMaterialization]:
        events = []
        for (reason, workflow_id), batch in sorted(self.by_workflow.items()):
            jobs = len(batch.job_ids)
            metadata = {
                "workflow_id": workflow_id,
                "reason": reason,
                "jobs_created": jobs,
                "data_resources": len(set(batch.data_resource_ids)),
                "job_ids": sample(batch.job_ids),
                "data_resource_ids": sample(batch.data_resource_ids),
                "ids_complete": jobs <= SAMPLE_SIZE,
                "created_by": self.created_by,
            }
            if batch.jobs:
                # Each job's group and, for a workflow with inputs by role, the data resource of each role.
                metadata["jobs"] = MetadataValue.json(batch.jobs[:SAMPLE_SIZE])
            if batch.groups:
                metadata["groups"] = sample(sorted(batch.groups))
            events.append(
                AssetMaterialization(
                    asset_key=JOBS,
                    partition=workflow_id,
                    description=f"{jobs} job(s) of workflow {workflow_id} for {reason}"
                    + (f" ({count(len(batch.groups), 'group')} complete)" if batch.groups else ""),
                    metadata=metadata,
                )
            )
        return events


@runtime_sensor(DATA_RESOURCES_SENSOR, every=1, description=DESCRIPTION, shows=AssetSelection.assets(JOBS))
def data_resources_sensor(context: SensorEvaluationContext, runtime: ResourceParam[RuntimeDatabase]):
    """Match unmatched data resources (queue: `matched_at IS NULL`, in seq order), then run pending backfills.

    The cursor is informational (`MatcherCursor`): the queue is the `matched_at` column, because sequence
    values can commit out of order and a `seq > cursor` scan would skip a row that commits late. Replays and a
    cursor moved back make no duplicates: the unique indexes `uq_jobs_workflow_trigger` (and
    `uq_jobs_workflow_trigger_group`, for workflows with inputs by role) and `ON CONFLICT DO NOTHING` see to it.
    """
    started = time.monotonic()
    before = MatcherCursor.read(context.cursor)
    cursor = MatcherCursor.read(context.cursor)
    made = _JobsMade(created_by=tick_label(context, DATA_RESOURCES_SENSOR))
    max_attempts = runtime.settings.max_attempts
    batch_size = runtime.batch_size

    def in_budget() -> bool:
        return time.monotonic() - started < runtime.tick_budget_seconds

    try:
        # Each loop runs at least one batch, so every tick makes progress however long a batch takes.
        while True:
            with runtime.session() as session:
                batch = pipeline_service.match_new_data_resources(
                    session, limit=batch_size, max_attempts=max_attempts, created_by=made.created_by
                )
            seen = {row.data_resource_id for row in batch.rows}
            made.data_resources_seen += len(seen)
            made.add("new data resources", batch)
            if batch.rows:
                cursor.seq = max(cursor.seq, max(row.seq for row in batch.rows))
            if len(seen) < batch_size or not in_budget():
                break

        with runtime.session() as session:
            pending = pipeline_store.workflows_needing_backfill(session)
        # Progress of workflows no longer waiting (finished elsewhere, disabled) is dropped.
        waiting = {b.workflow_id for b in pending}
        cursor.backfills = {k: v for k, v in cursor.backfills.items() if k in waiting}
        for backfill in pending:
            version = backfill.updated_at.isoformat()
            progress = cursor.backfills.get(backfill.workflow_id)
            # Resume a backfill a previous tick ran out of time on, unless the workflow changed since.
            after_seq = int(progress[1]) if progress and progress[0] == version else 0
            finished = False
            while True:
                with runtime.session() as session:
                    batch, finished = pipeline_service.backfill_workflow(
                        session,
                        workflow_id=backfill.workflow_id,
                        updated_at=backfill.updated_at,
                        after_seq=after_seq,
                        limit=batch_size,
                        max_attempts=max_attempts,
                        created_by=made.created_by,
                    )
                made.add("backfill", batch)
                if batch.rows:
                    after_seq = max(row.seq for row in batch.rows)
                # A short batch is the last: `finished` says whether it was recorded (False when the
                # workflow changed meanwhile; then the next tick starts it again).
                if len({row.data_resource_id for row in batch.rows}) < batch_size or not in_budget():
                    break
            if finished:
                cursor.backfills.pop(backfill.workflow_id, None)
            else:
                cursor.backfills[backfill.workflow_id] = [version, after_seq]
            if not in_budget():
                break
    except Exception:
        report_committed(context, made.events())
        raise

    if not made.job_count and not made.data_resources_seen and not pending:
        message = f"idle: no new data resources and no workflow to backfill (last seq matched: {cursor.seq})"
        if cursor == before:
            return SkipReason(message)
        return SensorResult(skip_reason=message, cursor=cursor.dump())
    # A tick that records asset events but launches no run is SKIPPED in Dagster whatever it did, and the
    # skip reason is the only text the tick history shows: say there what the tick made.
    summary = made.summary(backfills=len(pending))
    context.log.info(f"{summary}; as {made.created_by}; last seq matched {cursor.seq}")
    workflows = made.workflows()
    return SensorResult(
        asset_events=made.events(),
        dynamic_partitions_requests=(
            [AddDynamicPartitionsRequest(workflow_partitions.name, workflows)] if workflows else None
        ),
        cursor=cursor.dump(),
        skip_reason=summary,
    )
