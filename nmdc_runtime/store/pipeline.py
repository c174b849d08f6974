"""The queries the Dagster sensors run: matching data resources to workflows, backfills, executions, the
operations that ended, and the queue's health.

Jobs are made set-based: one `INSERT ... SELECT` per batch of data resources, never one statement per row,
so a burst of ten thousand registrations costs a handful of statements. Every insert is
`ON CONFLICT DO NOTHING` against a partial unique index, `uq_jobs_workflow_trigger` (a workflow without
inputs by role: one job per data resource) or `uq_jobs_workflow_trigger_group` (with inputs by role: one
job per group): whatever replays a batch (a retried tick, a cursor moved back, a backfill racing the
matcher), each (workflow, data resource) or (workflow, group) pair gets one job.

A job's config and id are made as every job's are (`nmdc_runtime.store.jobs.job_config`, the column's
default): the workflow's config, plus `data_resources`: the triggering data resource as the API shows it (for
a group's job: its inputs, also by role in `inputs`), and the `group`.

Every statement is SQLAlchemy Core, built once into a named constant beside the function that runs it (its
values bound parameters), except `runtime_status`'s, whose clock is a value of each call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from nmdc_runtime.domain.states import JobStatus, OperationState
from nmdc_runtime.models import (
    DataResource,
    Execution,
    Job,
    JobInput,
    Operation,
    Tally,
    WaitingGroup,
    Workflow,
    tally_changes,
)
from nmdc_runtime.store.jobs import data_resource_document, job_config
from nmdc_runtime.store.rules import lapsed_lease

R = TypeVar("R")


@dataclass(frozen=True)
class MatchedRow:
    """One data resource a batch went through, and one job made for it (None when none was made) by a workflow
    without inputs by role."""

    data_resource_id: str
    seq: int
    job_id: str | None
    workflow_id: str | None
    group: str | None = None
    """The data resource's group, and its job's."""
    fills_role: bool = False
    """It is of a group and of the data type of a role of an enabled workflow with inputs by role: it is
    matched as an input of its group, whether the group is complete yet or not."""


@dataclass(frozen=True)
class GroupJob:
    """A job made for a group, of a workflow with inputs by role."""

    job_id: str
    workflow_id: str
    group: str
    inputs: dict[str, str]
    """The data resource filling each role (role → id)."""


class Batch(NamedTuple):
    """What one batch went through and made: a row per data resource (with the job made for it, if any), and
    the jobs made for groups."""

    rows: list[MatchedRow]
    group_jobs: list[GroupJob]


_MAX_ATTEMPTS = sa.bindparam("max_attempts", type_=sa.Integer)
_CREATED_BY = sa.bindparam("created_by", type_=sa.Text)


def _make_jobs(d: sa.CTE, *, workflow_id: sa.BindParameter | None = None) -> sa.Select:
    """A statement that makes the jobs of the data resources of CTE `d` (only of workflow `workflow_id`,
    when given), with the config and id every job gets (store/jobs.py), and the jobs' inputs:

    - for each enabled workflow without inputs by role that accepts the data type, a job per data resource
      (`uq_jobs_workflow_trigger`);
    - for each enabled workflow with inputs by role of which a data resource of `d` may fill one, a job per
      group that has become complete (`_make_group_jobs`).

    It returns a `MatchedRow`'s columns per one-input job made, plus one with no job for each data resource
    that got none, in `seq` order (then by workflow); then one row per group job, with no data resource and
    its `inputs` (role → data resource id).
    """
    w = Workflow.__table__.alias("w")
    accepts = [w.c.enabled, w.c.inputs.is_(None), d.c.data_type == sa.any_(w.c.data_types)]
    if workflow_id is not None:
        accepts.append(w.c.id == workflow_id)
    rows = (
        sa.select(
            w.c.id,
            job_config(w, documents=sa.func.jsonb_build_array(data_resource_document(d)), group=d.c.group),
            _MAX_ATTEMPTS,
            d.c.id,
            d.c.group,
            _CREATED_BY,
        )
        .select_from(d.join(w, sa.and_(*accepts)))
        .order_by(d.c.seq, w.c.seq)
    )
    new_jobs = (
        pg_insert(Job)
        .from_select(
            [
                Job.workflow_id,
                Job.config,
                Job.max_attempts,
                Job.trigger_data_resource_id,
                Job.group,
                Job.created_by,
            ],
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
    gw = Workflow.__table__.alias("gw")
    with_roles = [gw.c.enabled, gw.c.inputs.is_not(None)]
    if workflow_id is not None:
        with_roles.append(gw.c.id == workflow_id)
    # Worked out once per statement (an InitPlan), not per row: the data types of those workflows' roles.
    role_types = sa.func.array(
        sa.select(sa.func.unnest(gw.c.data_types)).where(*with_roles).scalar_subquery()
    )
    per_data_resource = sa.select(
        d.c.id.label("data_resource_id"),
        d.c.seq,
        new_jobs.c.id.label("job_id"),
        new_jobs.c.workflow_id,
        d.c.group,
        sa.cast(sa.null(), JSONB).label("inputs"),
        sa.and_(d.c.group.is_not(None), d.c.data_type == sa.any_(role_types)).label("fills_role"),
    ).select_from(d.outerjoin(new_jobs, new_jobs.c.trigger_data_resource_id == d.c.id))

    # Groups a data resource of `d` may have completed: of the workflows with inputs by role of its data type,
    # those without their job for the group yet.
    fills = [*with_roles, d.c.data_type == sa.any_(gw.c.data_types)]
    candidates = (
        sa.select(gw.c.id.label("workflow_id"), d.c.group)
        .distinct()
        .select_from(d.join(gw, sa.and_(*fills)))
        .where(d.c.group.is_not(None), sa.not_(sa.exists().where(*_group_job_of(gw.c.id, d.c.group))))
        .cte("candidates")
    )
    per_group, group_ctes = _make_group_jobs(candidates)
    union = sa.union_all(per_data_resource, per_group).subquery("made")
    return (
        sa.select(*union.c)
        .order_by(union.c.seq.nulls_last(), union.c.workflow_id, union.c.group)
        .add_cte(new_inputs, *group_ctes)
    )


def _group_job_of(
    workflow_id: sa.ColumnElement[str], group: sa.ColumnElement[str]
) -> list[sa.ColumnElement[bool]]:
    """The conditions on `jobs` of the sensor's job of a workflow for a group (`uq_jobs_workflow_trigger_group`)."""
    return [Job.workflow_id == workflow_id, Job.trigger_group == group]


def _make_group_jobs(candidates: sa.CTE) -> tuple[sa.Select, list[sa.CTE]]:
    """The jobs of the (workflow, group) pairs of CTE `candidates` whose group is complete: a data resource of
    each required role's data type, the first registered of each type filling the role, optional roles
    filled when the group has them. A second job of a pair is impossible (`uq_jobs_workflow_trigger_group`).

    Each incomplete pair that has a required role filled is recorded in `waiting_groups` since its first such
    input's registration; a complete one is deleted from there. Returns the rows of the jobs made, as
    `_make_jobs` returns them, and the CTEs that write.
    """
    rw = Workflow.__table__.alias("rw")
    role = (
        sa.func.jsonb_each(rw.c.inputs)
        .table_valued(sa.column("key", sa.Text), sa.column("value", JSONB))
        .render_derived(name="role")
    )
    roles = (
        sa.select(
            candidates.c.workflow_id,
            candidates.c.group,
            role.c.key.label("role"),
            role.c.value["data_type"].astext.label("data_type"),
            role.c.value["optional"].astext.cast(sa.Boolean).label("optional"),
        )
        .select_from(candidates.join(rw, rw.c.id == candidates.c.workflow_id).join(role, sa.true()))
        .cte("roles")
    )
    x = DataResource.__table__.alias("x")
    # Through `ix_data_resources_group`: the first registered of the group's data resources of the role's type.
    first = (
        sa.select(x)
        .where(x.c.group == roles.c.group, x.c.data_type == roles.c.data_type)
        .order_by(x.c.seq)
        .limit(1)
        .lateral("first")
    )
    picked = (
        sa.select(
            roles.c.workflow_id,
            roles.c.group,
            roles.c.role,
            roles.c.optional,
            first.c.id.label("data_resource_id"),
            first.c.created_at,
            data_resource_document(first).label("document"),
        )
        .select_from(roles.outerjoin(first, sa.true()))
        .cte("picked")
    )
    filled = picked.c.data_resource_id.is_not(None)
    required_filled = sa.and_(filled, sa.not_(picked.c.optional))
    complete = sa.func.bool_and(sa.or_(filled, picked.c.optional))
    state = (
        sa.select(
            picked.c.workflow_id,
            picked.c.group,
            complete.label("complete"),
            sa.func.bool_or(required_filled).label("started"),
            sa.func.min(picked.c.created_at).filter(required_filled).label("since"),
        )
        .group_by(picked.c.workflow_id, picked.c.group)
        .cte("group_state")
    )
    jw = Workflow.__table__.alias("jw")
    rows = (
        sa.select(
            jw.c.id,
            job_config(
                jw,
                documents=sa.func.jsonb_agg(aggregate_order_by(picked.c.document, picked.c.role)).filter(
                    filled
                ),
                inputs=sa.func.jsonb_object_agg(picked.c.role, picked.c.document).filter(filled),
                group=picked.c.group,
            ),
            _MAX_ATTEMPTS,
            picked.c.group,
            picked.c.group,
            _CREATED_BY,
        )
        .select_from(picked.join(jw, jw.c.id == picked.c.workflow_id))
        # By the workflow's key: its other columns (config) depend on it.
        .group_by(jw.c.id, picked.c.group)
        .having(complete)
        .order_by(jw.c.id, picked.c.group)
    )
    new_jobs = (
        pg_insert(Job)
        .from_select(
            [Job.workflow_id, Job.config, Job.max_attempts, Job.group, Job.trigger_group, Job.created_by],
            rows,
        )
        .on_conflict_do_nothing(
            index_elements=[Job.workflow_id, Job.trigger_group], index_where=Job.trigger_group.is_not(None)
        )
        .returning(Job.id, Job.workflow_id, Job.trigger_group)
        .cte("new_group_jobs")
    )
    of_new_job = sa.and_(
        picked.c.workflow_id == new_jobs.c.workflow_id, picked.c.group == new_jobs.c.trigger_group, filled
    )
    new_inputs = (
        pg_insert(JobInput)
        .from_select(
            [JobInput.job_id, JobInput.data_resource_id],
            sa.select(new_jobs.c.id, picked.c.data_resource_id).select_from(
                new_jobs.join(picked, of_new_job)
            ),
        )
        .on_conflict_do_nothing()
        .cte("new_group_inputs")
    )
    waiting = (
        pg_insert(WaitingGroup)
        .from_select(
            [WaitingGroup.workflow_id, WaitingGroup.group, WaitingGroup.since],
            sa.select(state.c.workflow_id, state.c.group, state.c.since).where(
                sa.not_(state.c.complete), state.c.started
            ),
        )
        .on_conflict_do_nothing()
        .cte("waiting")
    )
    done_waiting = (
        sa.delete(WaitingGroup)
        .where(
            sa.tuple_(WaitingGroup.workflow_id, WaitingGroup.group).in_(
                sa.select(state.c.workflow_id, state.c.group).where(state.c.complete)
            )
        )
        .cte("done_waiting")
    )
    made = (
        sa.select(
            sa.cast(sa.null(), sa.Text).label("data_resource_id"),
            sa.cast(sa.null(), sa.BigInteger).label("seq"),
            new_jobs.c.id.label("job_id"),
            new_jobs.c.workflow_id,
            new_jobs.c.trigger_group.label("group"),
            sa.func.jsonb_object_agg(picked.c.role, picked.c.data_resource_id).label("inputs"),
            sa.true().label("fills_role"),
        )
        .select_from(new_jobs.join(picked, of_new_job))
        .group_by(new_jobs.c.id, new_jobs.c.workflow_id, new_jobs.c.trigger_group)
    )
    return made, [new_inputs, waiting, done_waiting]


def _batch(result: sa.CursorResult) -> Batch:
    rows, group_jobs = [], []
    for r in result:
        if r.data_resource_id is None:
            group_jobs.append(GroupJob(r.job_id, r.workflow_id, r.group, dict(r.inputs)))
        else:
            rows.append(MatchedRow(r.data_resource_id, r.seq, r.job_id, r.workflow_id, r.group, r.fills_role))
    return Batch(rows, group_jobs)


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


def match_new_data_resources(session: Session, *, limit: int, max_attempts: int, created_by: str) -> Batch:
    """Make jobs for the next `limit` unmatched data resources (in `seq` order) and mark them matched.

    One statement: lock the batch (skipping rows another matcher holds), set `matched_at`, insert one job per
    enabled workflow without inputs by role whose `data_types` contain the data type, one per group the batch
    completed for each workflow with inputs by role (`_make_group_jobs`), and the jobs' inputs. Its rows: one
    per one-input job made, plus one with `job_id=None` for each data resource that got no such job; and the
    group jobs made. A data resource whose group is still incomplete is matched all the same: the data
    resource that completes the group finds it. The caller commits.
    """
    result = session.execute(
        _MATCH_BATCH, {"limit": limit, "max_attempts": max_attempts, "created_by": created_by}
    )
    return _batch(result)


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
            # A data resource of no group is never an input of a workflow with inputs by role.
            sa.or_(wf.c.inputs.is_(None), data_resources.c.group.is_not(None)),
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
) -> Batch:
    """Make jobs of one workflow for the next `limit` matching data resources with `seq > after_seq` (of a
    group, for a workflow with inputs by role: the jobs of the groups they complete).

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
    return _batch(result)


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


_FAILED_FOR_GOOD = sa.and_(Job.status == JobStatus.FAILED.value, Operation.attempt == Job.attempts)
"""Over an operation and its job: the job failed with this operation, its last attempt."""


_OPERATION_EXECUTION = sa.func.coalesce(
    Operation.result_execution_id,
    sa.select(Execution.id)
    .where(Execution.operation_id == Operation.id)
    .order_by(Execution.seq.desc())
    .limit(1)
    .scalar_subquery(),
)
"""An ended operation's execution: its result, else the last execution its holder recorded under it (a run that
failed is recorded, then the operation is finished with an error)."""


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
    execution_id: str | None
    """Its execution: the result of a succeeded operation, else the last one its holder recorded under it (a
    failed run), if any."""
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
        _OPERATION_EXECUTION.label("execution_id"),
        Operation.update_time.label("ended_at"),
        Job.status.label("job_status"),
        Job.max_attempts,
        _FAILED_FOR_GOOD.label("job_failed_for_good"),
    ).join(Job, Job.id == Operation.job_id),
    Operation.end_seq,
)


def operations_ended_after(
    session: Session, *, after_seq: int, also_seqs: Sequence[int] = (), limit: int
) -> list[OperationEnding]:
    """Operations with `end_seq > after_seq`, or whose `end_seq` is in `also_seqs`, in the order they ended."""
    return _feed_rows(session, _OPERATIONS_ENDED_AFTER, OperationEnding, after_seq, also_seqs, limit)


_LATEST_EXECUTION = _EXECUTIONS_AFTER.order_by(None).order_by(Execution.seq.desc()).limit(1)
_LATEST_OPERATION_OUTCOME = (
    _OPERATIONS_ENDED_AFTER.where(Operation.state != OperationState.CANCELED.value)
    .order_by(None)
    .order_by(Operation.end_seq.desc())
    .limit(1)
)


def latest_outcomes(session: Session) -> tuple[ExecutionRow | None, OperationEnding | None]:
    """The last execution reported, and the last operation that ended succeeded, failed or expired."""
    feed = {"after_seq": 0, "also_seqs": [], "limit": 1}
    execution = session.execute(_LATEST_EXECUTION, feed).first()
    operation = session.execute(_LATEST_OPERATION_OUTCOME, feed).first()
    return (
        ExecutionRow(**execution._mapping) if execution else None,
        OperationEnding(**operation._mapping) if operation else None,
    )


@dataclass(frozen=True)
class FailedForGood:
    """A job that failed after its last attempt, the operation it ended with and that operation's execution."""

    job_id: str
    operation_id: str
    execution_id: str | None


_JOBS_FAILED_FOR_GOOD = (
    sa.select(
        Operation.job_id, Operation.id.label("operation_id"), _OPERATION_EXECUTION.label("execution_id")
    )
    .join(Job, Job.id == Operation.job_id)
    # `done`, as the partial index on update_time says.
    .where(Operation.done, Operation.update_time > sa.bindparam("since"), _FAILED_FOR_GOOD)
    .order_by(Operation.update_time.desc())
    .limit(sa.bindparam("limit"))
)


def jobs_failed_for_good(session: Session, *, since: datetime, limit: int) -> list[FailedForGood]:
    """The last `limit` jobs that failed for good after `since`, latest first."""
    rows = session.execute(_JOBS_FAILED_FOR_GOOD, {"since": since, "limit": limit})
    return [FailedForGood(**r._mapping) for r in rows]


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
    incomplete_group_grace: timedelta = timedelta(days=1),
    window: timedelta = timedelta(hours=1),
) -> dict[str, Any]:
    """Queue health: jobs per status, backlogs and their oldest rows, open and lapsed operations, and the
    operations that ended within `window` before `now`, by state.

    `lapsed_leases` counts leases lapsed by `now`; `lapsed_leases_overdue` those lapsed for longer than
    `lease_grace`, which the reaper (every 10 s) should have ended. `incomplete_groups` counts the groups
    waiting for inputs of enabled workflows (`waiting_groups`), `incomplete_groups_overdue` those waiting
    for longer than `incomplete_group_grace`. Three statements, each reading the open work, the last `window`
    or the tallies: none grows with the jobs and executions of the past.
    """
    counts = tallies(session)
    count = sa.func.count
    unmatched = DataResource.matched_at.is_(None)
    waiting = (
        sa.select(WaitingGroup)
        .join(Workflow, Workflow.id == WaitingGroup.workflow_id)
        .where(Workflow.enabled)
    )

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
            scalar(waiting.with_only_columns(count())).label("incomplete_groups"),
            scalar(
                waiting.with_only_columns(count()).where(WaitingGroup.since <= now - incomplete_group_grace)
            ).label("incomplete_groups_overdue"),
            scalar(waiting.with_only_columns(sa.func.min(WaitingGroup.since))).label(
                "oldest_incomplete_group"
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
            count().filter(_FAILED_FOR_GOOD),
        )
        .join(Job, Job.id == Operation.job_id)
        # `done`, as the partial index on update_time says.
        .where(Operation.done, Operation.update_time > now - window)
        .group_by(Operation.state)
    ).all()
    status["operations_ended_by_state"] = {state: n for state, n, _ in ended}
    status["jobs_failed_for_good"] = sum(final for _, _, final in ended)
    return status


@dataclass(frozen=True)
class IncompleteGroup:
    """A group that has some but not all required inputs of an enabled workflow, and since when."""

    workflow_id: str
    group: str
    since: datetime
    filled: list[str]
    """The roles it has a data resource for."""
    missing: list[str]
    """The required roles it has none for."""


def _incomplete_groups_statement() -> sa.Select:
    w = Workflow.__table__.alias("w")
    wg = WaitingGroup.__table__
    role = (
        sa.func.jsonb_each(w.c.inputs)
        .table_valued(sa.column("key", sa.Text), sa.column("value", JSONB))
        .render_derived(name="role")
    )
    x = DataResource.__table__.alias("x")
    has = (
        sa.exists()
        .where(x.c.group == wg.c.group, x.c.data_type == role.c.value["data_type"].astext)
        .correlate(wg, role)
    )
    required = sa.not_(role.c.value["optional"].astext.cast(sa.Boolean))
    roles = (
        sa.select(
            sa.func.array_agg(aggregate_order_by(role.c.key, role.c.key)).filter(has).label("filled"),
            sa.func.array_agg(aggregate_order_by(role.c.key, role.c.key))
            .filter(sa.and_(required, sa.not_(has)))
            .label("missing"),
        )
        .select_from(role)
        .lateral("roles")
    )
    return (
        sa.select(wg.c.workflow_id, wg.c.group, wg.c.since, roles.c.filled, roles.c.missing)
        .select_from(wg.join(w, w.c.id == wg.c.workflow_id).join(roles, sa.true()))
        .where(
            w.c.enabled,
            wg.c.since <= sa.bindparam("before"),
            # Judged again as read: a job made, or roles changed, since the sensor wrote the row.
            sa.not_(sa.exists().where(*_group_job_of(wg.c.workflow_id, wg.c.group))),
            roles.c.missing.is_not(None),
        )
        .order_by(wg.c.since, wg.c.workflow_id, wg.c.group)
        .limit(sa.bindparam("limit"))
    )


_INCOMPLETE_GROUPS = _incomplete_groups_statement()


def incomplete_groups(session: Session, *, before: datetime, limit: int) -> list[IncompleteGroup]:
    """The first `limit` groups (oldest first) that have waited since `before` or earlier for required inputs
    of an enabled workflow: what they have and what they miss, read now."""
    rows = session.execute(_INCOMPLETE_GROUPS, {"before": before, "limit": limit})
    return [
        IncompleteGroup(r.workflow_id, r.group, r.since, list(r.filled or []), list(r.missing)) for r in rows
    ]


_FORGET_WAITING_GROUPS = sa.delete(WaitingGroup).where(
    WaitingGroup.workflow_id == sa.bindparam("workflow_id")
)


def forget_waiting_groups(session: Session, *, workflow_id: str) -> None:
    """Forget the groups a workflow waited on: its roles changed, and its backfill finds them again."""
    session.execute(_FORGET_WAITING_GROUPS, {"workflow_id": workflow_id})


_OPERATIONS_BY_STATE = sa.select(Operation.state, sa.func.count()).group_by(Operation.state)


def operations_by_state(session: Session) -> dict[str, int]:
    """How many operations are stored in each state."""
    return {state: count for state, count in session.execute(_OPERATIONS_BY_STATE)}
