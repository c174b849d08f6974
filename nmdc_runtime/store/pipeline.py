"""The queries the Dagster sensors run: matching data resources to workflows, backfills, executions, the
operations that ended, and the queue's health.

Jobs are made set-based: one `INSERT ... SELECT` per batch of data resources, never one statement per row,
so a burst of ten thousand registrations costs a handful of statements. Every insert is
`ON CONFLICT DO NOTHING` against the partial unique index `uq_jobs_workflow_trigger`: whatever replays a
batch (a retried tick, a cursor moved back, a backfill racing the matcher), each (workflow, data resource)
pair gets one job.

A job's config and id are made as every job's are (`nmdc_runtime.store.jobs.job_config`, the column's
default): the workflow's config, plus `data_resources`: the triggering data resource as the API shows it.

Every statement is SQLAlchemy Core, built once into a named constant beside the function that runs it (its
values bound parameters), except `runtime_status`'s, whose clock is a value of each call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.models import (
    DataResource,
    Execution,
    Job,
    JobInput,
    Operation,
    Tally,
    Workflow,
    tally_changes,
)
from nmdc_runtime.store.jobs import data_resource_document, job_config
from nmdc_runtime.store.rules import lapsed_lease

R = TypeVar("R")


@dataclass(frozen=True)
class MatchedRow:
    """One data resource a batch went through, and one job made for it (None when none was made)."""

    data_resource_id: str
    seq: int
    job_id: str | None
    workflow_id: str | None


def _make_jobs(d: sa.CTE, *, workflow_id: sa.BindParameter | None = None) -> sa.Select:
    """A statement that makes the jobs of the data resources of CTE `d`: one for each enabled workflow that
    accepts the data type (only `workflow_id`, when given), with the config and id every job gets
    (store/jobs.py), and the jobs' inputs. It returns a `MatchedRow` per job made, plus one with no job for
    each data resource that got none, in `seq` order (then by workflow, when there may be several)."""
    w = Workflow.__table__.alias("w")
    accepts = [w.c.enabled, d.c.data_type == sa.any_(w.c.data_types)]
    if workflow_id is not None:
        accepts.append(w.c.id == workflow_id)
    rows = (
        sa.select(
            w.c.id,
            job_config(w, documents=sa.func.jsonb_build_array(data_resource_document(d))),
            sa.bindparam("max_attempts", type_=sa.Integer),
            d.c.id,
            sa.bindparam("created_by", type_=sa.Text),
        )
        .select_from(d.join(w, sa.and_(*accepts)))
        .order_by(d.c.seq, w.c.seq)
    )
    new_jobs = (
        pg_insert(Job)
        .from_select(
            [Job.workflow_id, Job.config, Job.max_attempts, Job.trigger_data_resource_id, Job.created_by],
            rows,
        )
        .on_conflict_do_nothing(
            index_elements=[Job.workflow_id, Job.trigger_data_resource_id],
            index_where=Job.trigger_data_resource_id.is_not(None),
        )
        .returning(Job.id, Job.workflow_id, Job.trigger_data_resource_id)
        .cte("new_jobs")
    )
    new_inputs = (
        pg_insert(JobInput)
        .from_select(
            [JobInput.job_id, JobInput.data_resource_id],
            sa.select(new_jobs.c.id, new_jobs.c.trigger_data_resource_id),
        )
        .on_conflict_do_nothing()
        .cte("new_inputs")
    )
    order = (d.c.seq,) if workflow_id is not None else (d.c.seq, new_jobs.c.workflow_id)
    return (
        sa.select(
            d.c.id.label("data_resource_id"),
            d.c.seq,
            new_jobs.c.id.label("job_id"),
            new_jobs.c.workflow_id,
        )
        .select_from(d.outerjoin(new_jobs, new_jobs.c.trigger_data_resource_id == d.c.id))
        .order_by(*order)
        .add_cte(new_inputs)
    )


def _rows(result: sa.CursorResult) -> list[MatchedRow]:
    return [MatchedRow(r.data_resource_id, r.seq, r.job_id, r.workflow_id) for r in result]


def _match_batch_statement() -> sa.Select:
    data_resources = DataResource.__table__
    batch = (
        sa.select(data_resources.c.id)
        .where(data_resources.c.matched_at.is_(None))
        .order_by(data_resources.c.seq)
        .limit(sa.bindparam("limit"))
        # FOR NO KEY UPDATE (`key_share`): jobs made elsewhere (POST /jobs) only need KEY SHARE on their data
        # resources.
        .with_for_update(key_share=True, skip_locked=True)
        .cte("batch")
    )
    d = (
        sa.update(data_resources)
        .where(data_resources.c.id == batch.c.id)
        .values(matched_at=sa.func.now())
        .returning(*data_resources.c)
        .cte("d")
    )
    return _make_jobs(d)


_MATCH_BATCH = _match_batch_statement()


def match_new_data_resources(
    session: Session, *, limit: int, max_attempts: int, created_by: str
) -> list[MatchedRow]:
    """Make jobs for the next `limit` unmatched data resources (in `seq` order) and mark them matched.

    One statement: lock the batch (skipping rows another matcher holds), set `matched_at`, insert one job per
    enabled workflow whose `data_types` contain the data type, and the jobs' inputs. Rows are returned one per
    job made, plus one with `job_id=None` for each data resource that got no new job. The caller commits.
    """
    result = session.execute(
        _MATCH_BATCH, {"limit": limit, "max_attempts": max_attempts, "created_by": created_by}
    )
    return _rows(result)


@dataclass(frozen=True)
class Backfill:
    """A workflow whose matching data resources need jobs: new, re-enabled or changed since its last backfill."""

    workflow_id: str
    updated_at: datetime


_NEEDS_BACKFILL = sa.and_(
    Workflow.enabled,
    sa.or_(Workflow.backfilled_at.is_(None), Workflow.updated_at > Workflow.backfilled_at),
)
"""A workflow never backfilled, or changed since its last backfill, and enabled."""

_WORKFLOWS_NEEDING_BACKFILL = (
    sa.select(Workflow.id, Workflow.updated_at)
    .where(_NEEDS_BACKFILL)
    .order_by(Workflow.seq)
    .limit(sa.bindparam("limit"))
)


def workflows_needing_backfill(session: Session, *, limit: int = 100) -> list[Backfill]:
    """Enabled workflows never backfilled, or changed (`updated_at`) since their last backfill."""
    rows = session.execute(_WORKFLOWS_NEEDING_BACKFILL, {"limit": limit})
    return [Backfill(workflow_id=r.id, updated_at=r.updated_at) for r in rows]


def _backfill_batch_statement() -> sa.Select:
    data_resources = DataResource.__table__
    wf = Workflow.__table__.alias("wf")
    workflow_id = sa.bindparam("workflow_id", type_=sa.Text)
    d = (
        sa.select(data_resources)
        .where(
            wf.c.id == workflow_id,
            data_resources.c.data_type == sa.any_(wf.c.data_types),
            data_resources.c.seq > sa.bindparam("after_seq"),
        )
        .order_by(data_resources.c.seq)
        .limit(sa.bindparam("limit"))
        .cte("d")
    )
    return _make_jobs(d, workflow_id=workflow_id)


_BACKFILL_BATCH = _backfill_batch_statement()


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


# A parameter named after a column of the updated table would set it: hence `as_of`.
_MARK_BACKFILLED = (
    sa.update(Workflow.__table__)
    .where(Workflow.id == sa.bindparam("workflow_id"), Workflow.updated_at == sa.bindparam("as_of"))
    .values(backfilled_at=sa.bindparam("as_of"))
)


def mark_backfilled(session: Session, *, workflow_id: str, updated_at: datetime) -> bool:
    """Record that the workflow as of `updated_at` has been backfilled; False if it changed meanwhile.

    `backfilled_at` takes the `updated_at` the backfill started from, not the clock: a PATCH that lands
    during the backfill leaves `updated_at > backfilled_at`, so the next tick backfills again.
    """
    result = session.execute(_MARK_BACKFILLED, {"workflow_id": workflow_id, "as_of": updated_at})
    return result.rowcount == 1


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


def _feed(rows: sa.Select, seq: sa.ColumnElement[int]) -> sa.Select:
    """The `:limit` first `rows` in `seq` order whose `seq` is above `:after_seq` or in `:also_seqs` (the gaps a
    sensor's cursor awaits)."""
    awaited = sa.bindparam("also_seqs", type_=ARRAY(sa.BigInteger))
    return (
        rows.where(sa.or_(seq > sa.bindparam("after_seq"), seq == sa.any_(awaited)))
        .order_by(seq)
        .limit(sa.bindparam("limit"))
    )


def _feed_rows(
    session: Session,
    statement: sa.Select,
    row: Callable[..., R],
    after_seq: int,
    also_seqs: Sequence[int],
    limit: int,
) -> list[R]:
    """What a `_feed` statement finds, each row made a `row`."""
    found = session.execute(statement, {"after_seq": after_seq, "also_seqs": list(also_seqs), "limit": limit})
    return [row(**r._mapping) for r in found]


_EXECUTIONS_AFTER = _feed(
    sa.select(*(Execution.__table__.c[field.name] for field in fields(ExecutionRow))), Execution.seq
)


def executions_after(
    session: Session, *, after_seq: int, also_seqs: Sequence[int] = (), limit: int
) -> list[ExecutionRow]:
    """Executions with `seq > after_seq`, or whose `seq` is in `also_seqs` (gaps seen earlier), in seq order."""
    return _feed_rows(session, _EXECUTIONS_AFTER, ExecutionRow, after_seq, also_seqs, limit)


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


_OPERATIONS_ENDED_AFTER = _feed(
    sa.select(
        Operation.id,
        Operation.end_seq,
        Operation.job_id,
        Operation.workflow_id,
        Operation.site_id,
        Operation.attempt,
        Operation.state,
        Operation.error,
        Operation.result_execution_id,
        Operation.update_time.label("ended_at"),
        Job.status.label("job_status"),
        Job.max_attempts,
        sa.and_(Job.status == JobStatus.FAILED.value, Operation.attempt == Job.attempts).label(
            "job_failed_for_good"
        ),
    ).join(Job, Job.id == Operation.job_id),
    Operation.end_seq,
)


def operations_ended_after(
    session: Session, *, after_seq: int, also_seqs: Sequence[int] = (), limit: int
) -> list[OperationEnding]:
    """Operations with `end_seq > after_seq`, or whose `end_seq` is in `also_seqs`, in the order they ended."""
    return _feed_rows(session, _OPERATIONS_ENDED_AFTER, OperationEnding, after_seq, also_seqs, limit)


def _tallies_statement() -> sa.Select:
    rows = sa.union_all(
        sa.select(Tally.counted, Tally.n), sa.select(tally_changes.c.counted, tally_changes.c.n)
    ).subquery()
    return sa.select(rows.c.counted, sa.func.sum(rows.c.n)).group_by(rows.c.counted)


_TALLIES = _tallies_statement()


def tallies(session: Session) -> dict[str, int]:
    """Every tally (`jobs.<status>`, `executions`): the folded counts plus the changes not folded yet."""
    return {counted: int(n) for counted, n in session.execute(_TALLIES)}


def _fold_tally_changes_statement() -> sa.Select:
    folded = sa.delete(tally_changes).returning(tally_changes.c.counted, tally_changes.c.n).cte("folded")
    insert = pg_insert(Tally).from_select(
        [Tally.counted, Tally.n],
        sa.select(folded.c.counted, sa.func.sum(folded.c.n)).group_by(folded.c.counted),
    )
    added = insert.on_conflict_do_update(
        index_elements=[Tally.counted], set_={"n": Tally.n + insert.excluded.n}
    ).cte("added")
    return sa.select(sa.func.count()).select_from(folded).add_cte(added)


_FOLD_TALLY_CHANGES = _fold_tally_changes_statement()


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
            scalar(sa.select(count()).select_from(Workflow).where(_NEEDS_BACKFILL)).label(
                "pending_backfills"
            ),
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


_OPERATIONS_BY_STATE = sa.select(Operation.state, sa.func.count()).group_by(Operation.state)


def operations_by_state(session: Session) -> dict[str, int]:
    """How many operations are stored in each state."""
    return {state: count for state, count in session.execute(_OPERATIONS_BY_STATE)}
