"""The queries the Dagster sensors run: matching data resources to workflows, backfills, executions, the
operations that ended, and the queue's health.

Jobs are made set-based: one `INSERT ... SELECT` per batch of data resources, never one statement per row,
so a burst of ten thousand registrations costs a handful of statements. Every insert is
`ON CONFLICT DO NOTHING` against the partial unique index `uq_jobs_workflow_trigger`: whatever replays a
batch (a retried tick, a cursor moved back, a backfill racing the matcher), each (workflow, data resource)
pair gets one job.

A job's config and id are made as every job's are (`nmdc_runtime.store.jobs.job_config_sql`, the column's
default): the workflow's config, plus `data_resources`: the triggering data resource as the API shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.models import DataResource, Job, Operation, Tally, Workflow, tally_changes
from nmdc_runtime.store.jobs import DATA_RESOURCE_DOCUMENT, job_config_sql
from nmdc_runtime.store.rules import lapsed_lease

# Jobs for the rows of CTE `d` (data resources) joined to CTE/table `w` (enabled matching workflows), with the
# config and id every job gets (store/jobs.py).
_INSERT_JOBS = f"""
    INSERT INTO jobs (workflow_id, config, max_attempts, trigger_data_resource_id, created_by)
    SELECT w.id,
           {job_config_sql(documents=f"jsonb_build_array({DATA_RESOURCE_DOCUMENT})")},
           :max_attempts,
           d.id,
           :created_by
    FROM d JOIN workflows w ON w.enabled AND d.data_type = ANY(w.data_types)
        -- NULL: every workflow (the matcher); a backfill names its own. psycopg2 sends the value inline, so the
        -- planner folds the NULL case away.
        AND (CAST(:workflow_id AS text) IS NULL OR w.id = :workflow_id)
    ORDER BY d.seq, w.seq
    ON CONFLICT (workflow_id, trigger_data_resource_id) WHERE trigger_data_resource_id IS NOT NULL
    DO NOTHING
    RETURNING id, workflow_id, trigger_data_resource_id
"""

_MATCH_BATCH = sa.text(
    f"""
    WITH batch AS (
        SELECT id FROM data_resources
        WHERE matched_at IS NULL
        ORDER BY seq
        LIMIT :limit
        -- NO KEY: jobs made elsewhere (POST /jobs) only need KEY SHARE on their data resources.
        FOR NO KEY UPDATE SKIP LOCKED
    ),
    d AS (
        UPDATE data_resources AS r SET matched_at = now()
        FROM batch WHERE r.id = batch.id
        RETURNING r.*
    ),
    new_jobs AS ({_INSERT_JOBS}),
    new_inputs AS (
        INSERT INTO job_inputs (job_id, data_resource_id)
        SELECT id, trigger_data_resource_id FROM new_jobs
        ON CONFLICT DO NOTHING
    )
    SELECT d.id AS data_resource_id, d.seq, j.id AS job_id, j.workflow_id
    FROM d LEFT JOIN new_jobs j ON j.trigger_data_resource_id = d.id
    ORDER BY d.seq, j.workflow_id
    """
)

_BACKFILL_BATCH = sa.text(
    f"""
    WITH d AS (
        SELECT r.* FROM data_resources r, workflows wf
        WHERE wf.id = :workflow_id AND r.data_type = ANY(wf.data_types) AND r.seq > :after_seq
        ORDER BY r.seq
        LIMIT :limit
    ),
    new_jobs AS ({_INSERT_JOBS}),
    new_inputs AS (
        INSERT INTO job_inputs (job_id, data_resource_id)
        SELECT id, trigger_data_resource_id FROM new_jobs
        ON CONFLICT DO NOTHING
    )
    SELECT d.id AS data_resource_id, d.seq, j.id AS job_id, j.workflow_id
    FROM d LEFT JOIN new_jobs j ON j.trigger_data_resource_id = d.id
    ORDER BY d.seq
    """
)


@dataclass(frozen=True)
class MatchedRow:
    """One data resource a batch went through, and one job made for it (None when none was made)."""

    data_resource_id: str
    seq: int
    job_id: str | None
    workflow_id: str | None


@dataclass(frozen=True)
class Backfill:
    """A workflow whose matching data resources need jobs: new, re-enabled or changed since its last backfill."""

    workflow_id: str
    updated_at: datetime


def _rows(result: sa.CursorResult) -> list[MatchedRow]:
    return [MatchedRow(r.data_resource_id, r.seq, r.job_id, r.workflow_id) for r in result]


def match_new_data_resources(
    session: Session, *, limit: int, max_attempts: int, created_by: str
) -> list[MatchedRow]:
    """Make jobs for the next `limit` unmatched data resources (in `seq` order) and mark them matched.

    One statement: lock the batch (skipping rows another matcher holds), set `matched_at`, insert one job per
    enabled workflow whose `data_types` contain the data type, and the jobs' inputs. Rows are returned one per
    job made, plus one with `job_id=None` for each data resource that got no new job. The caller commits.
    """
    result = session.execute(
        _MATCH_BATCH,
        {"limit": limit, "max_attempts": max_attempts, "created_by": created_by, "workflow_id": None},
    )
    return _rows(result)


def workflows_needing_backfill(session: Session, *, limit: int = 100) -> list[Backfill]:
    """Enabled workflows never backfilled, or changed (`updated_at`) since their last backfill."""
    rows = session.execute(
        sa.text(
            """
            SELECT id, updated_at FROM workflows
            WHERE enabled AND (backfilled_at IS NULL OR updated_at > backfilled_at)
            ORDER BY seq
            LIMIT :limit
            """
        ),
        {"limit": limit},
    )
    return [Backfill(workflow_id=r.id, updated_at=r.updated_at) for r in rows]


def backfill_workflow(
    session: Session, *, workflow_id: str, after_seq: int, limit: int, max_attempts: int, created_by: str
) -> list[MatchedRow]:
    """Make jobs of one workflow for the next `limit` matching data resources with `seq > after_seq`.

    Data resources that already have a job of this workflow are passed over (`job_id=None` rows); the
    largest `seq` returned is where the next batch starts. Nothing is made while the workflow is disabled.
    The caller commits.
    """
    result = session.execute(
        _BACKFILL_BATCH,
        {
            "workflow_id": workflow_id,
            "after_seq": after_seq,
            "limit": limit,
            "max_attempts": max_attempts,
            "created_by": created_by,
        },
    )
    return _rows(result)


def mark_backfilled(session: Session, *, workflow_id: str, updated_at: datetime) -> bool:
    """Record that the workflow as of `updated_at` has been backfilled; False if it changed meanwhile.

    `backfilled_at` takes the `updated_at` the backfill started from, not the clock: a PATCH that lands
    during the backfill leaves `updated_at > backfilled_at`, so the next tick backfills again.
    """
    result = session.execute(
        sa.text(
            """
            UPDATE workflows SET backfilled_at = :updated_at
            WHERE id = :workflow_id AND updated_at = :updated_at
            """
        ),
        {"workflow_id": workflow_id, "updated_at": updated_at},
    )
    return result.rowcount == 1


def unmatched_count(session: Session) -> int:
    """How many data resources wait for the matcher (uses the partial index)."""
    return session.execute(
        sa.text("SELECT count(*) FROM data_resources WHERE matched_at IS NULL")
    ).scalar_one()


@dataclass(frozen=True)
class ExecutionRow:
    """An execution as the Dagster UI shows it."""

    id: str
    seq: int
    job_id: str
    workflow_id: str
    site_id: str
    operation_id: str
    status: str
    started_at: datetime
    ended_at: datetime
    output_ids: list[str]
    details: dict[str, Any]
    created_at: datetime


def executions_after(
    session: Session, *, after_seq: int, also_seqs: Sequence[int] = (), limit: int
) -> list[ExecutionRow]:
    """Executions with `seq > after_seq`, or whose `seq` is in `also_seqs` (gaps seen earlier), in seq order."""
    rows = session.execute(
        sa.text(
            """
            SELECT id, seq, job_id, workflow_id, site_id, operation_id, status, started_at, ended_at,
                   output_ids, details, created_at
            FROM executions
            WHERE seq > :after_seq OR seq = ANY(:also_seqs)
            ORDER BY seq
            LIMIT :limit
            """
        ),
        {"after_seq": after_seq, "also_seqs": list(also_seqs), "limit": limit},
    )
    return [ExecutionRow(**r._mapping) for r in rows]


@dataclass(frozen=True)
class OperationEnding:
    """An operation that ended, with its job as it stands now, as the Dagster UI shows it."""

    id: str
    end_seq: int
    job_id: str
    workflow_id: str
    site_id: str
    attempt: int
    state: str
    error: dict[str, Any] | None
    result_execution_id: str | None
    ended_at: datetime
    job_status: str
    max_attempts: int
    job_failed_for_good: bool
    """The job ended `failed` with this operation: its last attempt."""


def operations_ended_after(
    session: Session, *, after_seq: int, also_seqs: Sequence[int] = (), limit: int
) -> list[OperationEnding]:
    """Operations with `end_seq > after_seq`, or whose `end_seq` is in `also_seqs`, in the order they ended."""
    rows = session.execute(
        sa.text(
            """
            SELECT o.id, o.end_seq, o.job_id, o.workflow_id, o.site_id, o.attempt, o.state, o.error,
                   o.result_execution_id, o.update_time AS ended_at, j.status AS job_status, j.max_attempts,
                   (j.status = 'failed' AND o.attempt = j.attempts) AS job_failed_for_good
            FROM operations o JOIN jobs j ON j.id = o.job_id
            WHERE o.end_seq > :after_seq OR o.end_seq = ANY(:also_seqs)
            ORDER BY o.end_seq
            LIMIT :limit
            """
        ),
        {"after_seq": after_seq, "also_seqs": list(also_seqs), "limit": limit},
    )
    return [OperationEnding(**r._mapping) for r in rows]


_FOLD_TALLY_CHANGES = sa.text(
    """
    WITH folded AS (DELETE FROM tally_changes RETURNING counted, n),
         added AS (
             INSERT INTO tallies (counted, n) SELECT counted, sum(n) FROM folded GROUP BY counted
             ON CONFLICT (counted) DO UPDATE SET n = tallies.n + excluded.n
         )
    SELECT count(*) FROM folded
    """
)


def tallies(session: Session) -> dict[str, int]:
    """Every tally (`jobs.<status>`, `executions`): the folded counts plus the changes not folded yet."""
    changes = sa.select(tally_changes.c.counted, tally_changes.c.n)
    rows = sa.union_all(sa.select(Tally.counted, Tally.n), changes).subquery()
    totals = session.execute(sa.select(rows.c.counted, sa.func.sum(rows.c.n)).group_by(rows.c.counted))
    return {counted: int(n) for counted, n in totals}


def fold_tally_changes(session: Session) -> int:
    """Add the changes appended by the triggers to `tallies` and delete them; how many there were.

    Changes appended by transactions still open are not visible to the delete and wait for the next fold.
    """
    return session.execute(_FOLD_TALLY_CHANGES).scalar_one()


def runtime_status(
    session: Session,
    *,
    now: datetime,
    lease_grace: timedelta = timedelta(0),
    window: timedelta = timedelta(hours=1),
) -> dict[str, Any]:
    """Queue health: jobs per status, backlogs and their oldest rows, open and lapsed operations, and the
    operations that ended within `window` before `now`, by state.

    `lapsed_leases` counts leases lapsed by `now`; `lapsed_leases_overdue` those lapsed for longer than
    `lease_grace`, which the reaper (every 10 s) should have ended. Three statements, each reading the open
    work, the last `window` or the tallies: none grows with the jobs and executions of the past.
    """
    counts = tallies(session)
    count = sa.func.count
    unmatched = DataResource.matched_at.is_(None)

    def scalar(stmt: sa.Select) -> sa.ScalarSelect:
        return stmt.scalar_subquery()

    row = session.execute(
        sa.select(
            scalar(sa.select(count()).select_from(DataResource).where(unmatched)).label(
                "unmatched_data_resources"
            ),
            # The first by seq: the partial index of the sensor's queue finds it at once.
            scalar(
                sa.select(DataResource.created_at).where(unmatched).order_by(DataResource.seq).limit(1)
            ).label("oldest_unmatched_data_resource"),
            scalar(
                sa.select(count())
                .select_from(Workflow)
                .where(
                    Workflow.enabled,
                    sa.or_(Workflow.backfilled_at.is_(None), Workflow.updated_at > Workflow.backfilled_at),
                )
            ).label("pending_backfills"),
            scalar(sa.select(count()).select_from(Operation).where(sa.not_(Operation.done))).label(
                "open_operations"
            ),
            scalar(sa.select(count()).select_from(Operation).where(lapsed_lease(now))).label("lapsed_leases"),
            scalar(sa.select(count()).select_from(Operation).where(lapsed_lease(now - lease_grace))).label(
                "lapsed_leases_overdue"
            ),
            # The first by seq, as for data resources: `ix_jobs_unclaimed` finds it at once.
            scalar(
                sa.select(Job.created_at)
                .where(Job.status == JobStatus.UNCLAIMED.value)
                .order_by(Job.seq)
                .limit(1)
            ).label("oldest_unclaimed_job"),
        )
    ).one()
    status = dict(row._mapping)
    status["jobs_by_status"] = {
        counted.removeprefix("jobs."): n for counted, n in counts.items() if counted.startswith("jobs.") and n
    }
    status["executions"] = counts.get("executions", 0)
    ended = session.execute(
        sa.select(
            Operation.state,
            count(),
            count().filter(sa.and_(Job.status == JobStatus.FAILED.value, Operation.attempt == Job.attempts)),
        )
        .join(Job, Job.id == Operation.job_id)
        # `done`, as the partial index on update_time says.
        .where(Operation.done, Operation.update_time > now - window)
        .group_by(Operation.state)
    ).all()
    status["operations_ended_by_state"] = {state: n for state, n, _ in ended}
    status["jobs_failed_for_good"] = sum(final for _, _, final in ended)
    return status


def operations_by_state(session: Session) -> dict[str, int]:
    """How many operations are stored in each state."""
    rows = session.execute(sa.select(Operation.state, sa.func.count()).group_by(Operation.state))
    return {state: count for state, count in rows}
