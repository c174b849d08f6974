"""Queries on jobs' claims and operations: row locks, inserts, lists and the reaper's scans.

Lock order, everywhere: the job row first, then its operation. Claims, PATCHes, cancels and the lease reaper
all follow it, so two of them never wait on each other in a cycle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import make_dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
import sqlalchemy.orm
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.psycopg2 import dialect as psycopg2_dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.errors import Conflict, NotFound
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Execution, Job, JobInput, Operation, Site, Workflow
from nmdc_runtime.store import drains as drains_store
from nmdc_runtime.store import jobs as jobs_store
from nmdc_runtime.store.pages import PageParams, fetch_page, row_bytes
from nmdc_runtime.store.rules import (
    claim_grants_access,
    claimed_under_lapsed_lease,
    fault_streak,
    lapsed_lease,
)
from nmdc_runtime.store.statements import built_once

OPEN_OPERATION_INDEX = "uq_operations_open_job"


def _locking(entity, *, skip_locked: bool = False, **where: sa.ColumnElement[bool]):
    """SELECT `entity` FOR UPDATE where each keyword's column equals the bound parameter of that name.

    Built once per module, not per call: a statement object remembers its cache key, which SQLAlchemy would
    otherwise compute again for every execution. populate_existing: a row already in the session must show
    what the lock just read.
    """
    return (
        sa.select(entity)
        .where(*where.values())
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )


_LOCK_JOB = {
    skip: _locking(Job, skip_locked=skip, job=Job.id == sa.bindparam("job_id")) for skip in (False, True)
}
# `NOT done`: the partial unique index's predicate.
_LOCK_OPEN_OPERATION = _locking(
    Operation, job=Operation.job_id == sa.bindparam("job_id"), open=sa.not_(Operation.done)
)
_LOCK_OPERATION = _locking(Operation, op=Operation.id == sa.bindparam("op_id"))
_OPERATION_JOB_ID = sa.select(Operation.job_id).where(Operation.id == sa.bindparam("op_id"))


def lock_job(session: Session, *, job_id: str, skip_locked: bool = False) -> Job | None:
    """The job row, locked FOR UPDATE until the transaction ends; None when there is no such job
    (or, with `skip_locked`, when another transaction holds it)."""
    return session.scalars(_LOCK_JOB[skip_locked], {"job_id": job_id}).one_or_none()


def lock_job_or_404(session: Session, *, job_id: str) -> Job:
    """The job row locked FOR UPDATE, or NotFound."""
    job = lock_job(session, job_id=job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def open_operation(session: Session, *, job_id: str) -> Operation | None:
    """The job's unfinished operation (at most one exists), locked FOR UPDATE."""
    return session.scalars(_LOCK_OPEN_OPERATION, {"job_id": job_id}).one_or_none()


def get_operation(session: Session, *, op_id: str, lock: bool = False) -> Operation:
    """One operation, optionally locked FOR UPDATE, or NotFound."""
    if lock:
        row = session.scalars(_LOCK_OPERATION, {"op_id": op_id}).one_or_none()
    else:
        row = session.get(Operation, op_id)
    if row is None:
        raise NotFound(f"no operation {op_id!r}")
    return row


def find_operation(session: Session, *, op_id: str) -> Operation | None:
    """One operation (unlocked), or None."""
    return session.get(Operation, op_id)


def operation_job_id(session: Session, *, op_id: str) -> str:
    """The job an operation belongs to (unlocked), or NotFound: callers lock the job before the operation."""
    job_id = session.scalar(_OPERATION_JOB_ID, {"op_id": op_id})
    if job_id is None:
        raise NotFound(f"no operation {op_id!r}")
    return job_id


def insert_operation(session: Session, **fields: Any) -> Operation:
    """Insert a new open operation; a second open operation for the job raises Conflict.

    The job row lock makes that case unreachable in practice; the partial unique index is the last word.
    """
    operation = Operation(id=new_id("op"), **fields)
    try:
        with session.begin_nested():
            session.add(operation)
            session.flush()
    except IntegrityError as exc:
        if OPEN_OPERATION_INDEX in str(exc.orig):
            raise Conflict("another claim on this job is active") from exc
        raise
    return operation


class ClaimTerms(NamedTuple):
    """What a claim by a site on a job of a workflow is decided on."""

    site_capabilities: list[str]
    required_capabilities: list[str]
    lease_seconds: int | None
    """The workflow's lease length; None: the default."""
    fault_streak: list[tuple[str, datetime]]
    """The site's faults since its last success or undrain, oldest first, as (operation id, ended at): the
    first `drain_after` of them at most (`domain.drains.drain_of`)."""


def _terms_columns(
    site_id: str | sa.BindParameter,
    drain_after: int | sa.BindParameter,
    workflow: sa.FromClause = Workflow.__table__,
) -> tuple[sa.ColumnElement, ...]:
    """The columns of ClaimTerms, for a query that joins `workflows` (or the alias `workflow` of it)."""
    site = sa.select(Site.capabilities).where(Site.id == site_id).scalar_subquery()
    return (
        site,
        workflow.c.required_capabilities,
        workflow.c.lease_seconds,
        fault_streak(site_id, drain_after),
    )


def _terms(row: Sequence[Any]) -> ClaimTerms:
    return ClaimTerms(list(row[0]), list(row[1] or []), row[2], drains_store.streak_of(row[3]))


def claim_terms(session: Session, *, site_id: str, workflow_id: str, drain_after: int) -> ClaimTerms:
    """The site's capabilities and fault streak (its first `drain_after` faults) and the workflow's
    requirements and lease, in one round trip; NotFound for an unknown site."""
    row = session.execute(
        sa.select(*_terms_columns(site_id, drain_after)).where(Workflow.id == workflow_id)
    ).one()
    if row[0] is None:
        raise NotFound(f"no site {site_id!r}")
    return _terms(row)


JOB_FIXED = frozenset({"id", "workflow_id", "max_attempts"})
"""Fields of the rules' `Job` that a claim or a PATCH never changes."""
SEEN_JOB_FIELDS = (*operations_rules.Job.__annotations__, "created_at", "group")
"""What the fast paths read of a job: what the rules read and change of it (the `Job` protocol of
`domain.operations`, so a field the rules come to need is read without a change here), `created_at` for the
claim's latency metric, and `group` for an execution's outputs (they inherit it)."""
NOT_READ_BY_FAST_PATHS = frozenset(
    {"seq", "config", "trigger_data_resource_id", "trigger_group", "created_by"}
)
"""The columns of `jobs` the fast paths neither read nor write: each column of `jobs` is in one of the two
(tests/unit/test_fast_paths.py)."""
JOB_MOVED_FIELDS = tuple(name for name in operations_rules.Job.__annotations__ if name not in JOB_FIXED)
"""What the rules may change of a job (its status, attempts, update time): what the fast paths write of it
when the rules changed it, and what tells that it changed since it was read (every change sets
`updated_at`)."""

SeenJob = make_dataclass("SeenJob", SEEN_JOB_FIELDS)
SeenJob.__doc__ = """A job as one statement read it, unlocked (`SEEN_JOB_FIELDS`), outside the session, so
changing it writes nothing by itself."""

_SEEN_JOB = tuple(Job.__table__.c[name] for name in SEEN_JOB_FIELDS)


def driver_sql(statement: sa.ClauseElement) -> str:
    """A statement compiled once, for psycopg2 (`%(name)s` parameters): a hot path that runs it with
    `exec_driver_sql` skips SQLAlchemy's per-execution compile-cache look-up and ORM loading."""
    return str(statement.compile(dialect=psycopg2_dialect()))


_JOB_AND_TERMS = driver_sql(
    sa.select(*_SEEN_JOB, *_terms_columns(sa.bindparam("site_key"), sa.bindparam("drain_after")))
    .join(Workflow, Workflow.id == Job.workflow_id)
    .where(Job.id == sa.bindparam("job_key"))
)


def job_and_claim_terms(
    session: Session, *, job_id: str, site_id: str, drain_after: int
) -> tuple[SeenJob, ClaimTerms] | None:
    """The job (unlocked) and the terms of a claim on it by the site (its fault streak read up to
    `drain_after` faults), in one round trip; None for an unknown job or site."""
    row = (
        session.connection()
        .exec_driver_sql(_JOB_AND_TERMS, {"job_key": job_id, "site_key": site_id, "drain_after": drain_after})
        .one_or_none()
    )
    if row is None or row[len(_SEEN_JOB)] is None:
        return None
    return SeenJob(*row[: len(_SEEN_JOB)]), _terms(row[len(_SEEN_JOB) :])


NEXT_CANDIDATES = 32
"""How many of the first claimable jobs `lock_next_claimable` looks at: it takes the first that no other claim
holds, so up to this many claims at once (of every API process) never take each other's job."""
_JOB_ATTRIBUTES = [(attr.key, attr.columns[0].name) for attr in Job.__mapper__.column_attrs]


class NextClaimable(NamedTuple):
    """What `lock_next_claimable` found: the job it locked and the terms of a claim on it (None: none), and how
    many claimable jobs it looked at (up to `NEXT_CANDIDATES`)."""

    job: Job | None
    terms: ClaimTerms | None
    candidates: int


@built_once
def _next_claimable_statement(*, workflow_ids: bool) -> sa.Select:
    """The statement of `lock_next_claimable`: the claimable listing's first `NEXT_CANDIDATES` jobs (its
    parameters), each joined to itself in `jobs` as the listing saw it (status, attempts, update time), the
    first in creation order that no other transaction holds locked FOR UPDATE SKIP LOCKED; and, on the same
    row, how many the listing gave (none locked: no job, and that count).

    The version is compared in the join, not after: a job claimed and committed since the listing read it is
    locked in its new version, on which PostgreSQL evaluates the join again (READ COMMITTED's recheck of a
    locked row), so it is skipped as one held by another claim would be.
    """
    listing = jobs_store.claimable_first_page(workflow_ids=workflow_ids).subquery("claimable_first")
    seen = ("id", "status", "attempts", "updated_at")
    candidates = sa.select(*(listing.c[name] for name in seen)).cte("candidates")
    job = Job.__table__.alias("next_job")
    workflow = Workflow.__table__.alias("next_workflow")
    picked = (
        sa.select(
            *(job.c[column] for _, column in _JOB_ATTRIBUTES),
            *_terms_columns(sa.bindparam("site_key"), sa.bindparam("drain_after"), workflow),
        )
        .select_from(
            job.join(candidates, sa.and_(*(candidates.c[name] == job.c[name] for name in seen))).join(
                workflow, workflow.c.id == job.c.workflow_id
            )
        )
        .order_by(job.c.seq)
        .limit(1)
        .with_for_update(of=job, skip_locked=True)
        .lateral("picked")
    )
    counted = sa.select(sa.func.count().label("candidates")).select_from(candidates).subquery("counted")
    return sa.select(counted.c.candidates, picked).select_from(counted.outerjoin(picked, sa.true()))


def lock_next_claimable(
    session: Session,
    *,
    site_id: str,
    now: datetime,
    drain_after: int,
    workflow_ids: Sequence[str] | None = None,
) -> NextClaimable:
    """The job `site_id` may claim at `now` (`rules.claimable_by`, as the claimable listing says: of any of
    `workflow_ids` when given) that was made first among those no other transaction holds, locked FOR UPDATE
    until the caller's transaction ends (a new object outside the session), with the terms of its claim.

    A job found here may still not be claimable once locked: one under a lapsed lease whose holder has
    heartbeated since (a heartbeat changes the operation, not the job); the caller applies the rule to the
    locked rows. A drained site (its first `drain_after` faults in a row) finds none, as its listing is empty.
    """
    statement = _next_claimable_statement(workflow_ids=workflow_ids is not None)
    params: dict[str, Any] = {
        "site_key": site_id,
        "page_limit": NEXT_CANDIDATES,
        "now": now,
        "drain_after": drain_after,
    }
    if workflow_ids is not None:
        params["filter_workflow_ids"] = list(workflow_ids)
    row = session.execute(statement, params).one()
    jobs = len(_JOB_ATTRIBUTES)
    if row[1] is None:
        return NextClaimable(None, None, row[0])
    job = Job(**{key: value for (key, _), value in zip(_JOB_ATTRIBUTES, row[1 : 1 + jobs], strict=True)})
    return NextClaimable(job, _terms(row[1 + jobs :]), row[0])


def _job_moved(written: sa.CTE, *conditions: sa.ColumnElement[bool]) -> sa.CTE:
    """A CTE that gives the job of the operation row `written` returns its new `JOB_MOVED_FIELDS` (the
    `job_<field>` parameters, see `moved_parameters`), when `conditions` hold: no row, no write."""
    return (
        sa.update(Job)
        .where(Job.id == sa.select(written.c.job_id).scalar_subquery(), *conditions)
        .values({name: sa.bindparam(f"job_{name}") for name in JOB_MOVED_FIELDS})
        .cte("moved")
    )


def moved_parameters(job: SeenJob) -> dict[str, Any]:
    """The `job_<field>` parameters of `_job_moved`: the job's `JOB_MOVED_FIELDS` as the rules left them."""
    return {f"job_{name}": getattr(job, name) for name in JOB_MOVED_FIELDS}


def _job_locked_if(*columns: str) -> sa.CTE:
    """A CTE that locks the job `job_key` FOR UPDATE and yields its id if its `columns` still hold the
    `job_seen_<column>` parameters; no row when one changed (the lock then lasts only for the statement).

    The job is found by its key alone and compared after: with the version in the same WHERE, the planner
    may read it through `ix_jobs_status_seq` when its statistics have not seen the status yet (jobs just
    claimed, say) and walk every job of that status: bench/README.md, "The cycle's slow runs". A CTE that
    locks rows is never folded into the query that reads it, so the comparison cannot move back into the scan.
    """
    table = Job.__table__
    row = (
        sa.select(table.c.id, *(table.c[column] for column in columns))
        .where(table.c.id == sa.bindparam("job_key"))
        .with_for_update()
        .cte("job_row")
    )
    return (
        sa.select(row.c.id)
        .where(*(row.c[column] == sa.bindparam(f"job_seen_{column}") for column in columns))
        .cte("locked")
    )


def _claim_as_seen_statement() -> sa.Select:
    """The statement of `claim_as_seen`, built once, its values bound parameters: `op_<attribute>` for the
    operation's, `job_<column>` for the job's (names that are no column's: in an UPDATE, a parameter named
    after a column would set it)."""
    locked = _job_locked_if("status", "attempts")
    # The job id comes from the locked row: no row, nothing inserted.
    columns = [Operation.__mapper__.attrs[key].columns[0] for key in _CLAIM_FIELDS]
    chosen = sa.select(
        *(
            sa.bindparam(f"op_{key}", type_=column.type)
            for key, column in zip(_CLAIM_FIELDS, columns, strict=True)
        ),
        locked.c.id,
    )
    inserted = (
        pg_insert(Operation)
        .from_select([*columns, Operation.__table__.c.job_id], chosen)
        .on_conflict_do_nothing(index_elements=[Operation.job_id], index_where=sa.not_(Operation.done))
        .returning(*Operation.__table__.c)
        .cte("inserted")
    )
    return sa.select(*inserted.c).add_cte(_job_moved(inserted))


NOT_SET_BY_CLAIM = frozenset(
    {"seq", "end_seq", "job_id", "result_execution_id", "error", "expire_time", "execution_count"}
)
"""Columns of `operations` a claim does not give: the database numbers `seq` and `end_seq`, the job id comes
from the locked row, an open operation has no outcome and no expiry, and a new one no executions (the column's
default)."""
_CLAIM_FIELDS = tuple(
    attr.key for attr in Operation.__mapper__.column_attrs if attr.key not in NOT_SET_BY_CLAIM
)
"""What a new operation is given (`domain.operations.start_operation`'s fields, its id, and no job id): every
column but `NOT_SET_BY_CLAIM`, so a new column is written by the claim's statement, and
`start_operation` must give it (or it goes in `NOT_SET_BY_CLAIM`)."""
_CLAIM_AS_SEEN = driver_sql(_claim_as_seen_statement())
_OPERATION_ATTRIBUTES = [(attr.key, attr.columns[0].name) for attr in Operation.__mapper__.column_attrs]


def claim_as_seen(
    session: Session, *, job: SeenJob, seen_status: str, seen_attempts: int, operation: dict[str, Any]
) -> Operation | None:
    """Write a claim decided on a job as it was seen, in one statement: lock the job if it is still as seen
    (`seen_status`, `seen_attempts`), insert the new open `operation` and write the job's new status, attempts
    and update time. None, and nothing written, when the job changed meanwhile or an open operation exists
    (the partial unique index says so through `ON CONFLICT DO NOTHING`, without a savepoint).

    One statement is one transaction even in autocommit, so the lock, the insert and the update stand or
    fall together.
    """
    values = {"id": new_id("op"), **operation}
    if values.pop("job_id") != job.id or set(values) != set(_CLAIM_FIELDS):
        raise ValueError("the operation's fields are not those of a new operation of this job")
    # Driver-level parameters: JSON as text (the statement casts it), the rest as psycopg2 adapts them.
    values["extra_metadata"] = json.dumps(values["extra_metadata"])
    params = {
        **{f"op_{key}": value for key, value in values.items()},
        "job_key": job.id,
        "job_seen_status": seen_status,
        "job_seen_attempts": seen_attempts,
        **moved_parameters(job),
    }
    row = session.connection().exec_driver_sql(_CLAIM_AS_SEEN, params).mappings().one_or_none()
    if row is None:
        return None
    # A new row, not loaded through the session: nothing the session would write back.
    return Operation(**{key: row[column] for key, column in _OPERATION_ATTRIBUTES})


_EXECUTION_ATTRIBUTES = [(attr.key, attr.columns[0].name) for attr in Execution.__mapper__.column_attrs]
_OPERATION_JOB_AND_EXECUTION = driver_sql(
    sa.select(
        *(Operation.__table__.c[column] for _, column in _OPERATION_ATTRIBUTES),
        *_SEEN_JOB,
        *(Execution.__table__.c[column] for _, column in _EXECUTION_ATTRIBUTES),
    )
    .join(Job, Job.id == Operation.job_id)
    # No execution named: a join on NULL, which matches nothing.
    .outerjoin(Execution, Execution.id == sa.bindparam("execution_key"))
    .where(Operation.id == sa.bindparam("op_key"))
)


class SeenOperation(NamedTuple):
    """An operation, its job and an execution as one unlocked statement read them: new objects outside the
    session, so changing them writes nothing by itself."""

    operation: Operation
    job: SeenJob
    execution: Execution | None


def operation_job_and_execution(
    session: Session, *, op_id: str, execution_id: str | None
) -> SeenOperation | None:
    """The operation, its job and the execution named (None when it is not named or does not exist), in one
    round trip, unlocked; None for an unknown operation."""
    params = {"op_key": op_id, "execution_key": execution_id}
    row = session.connection().exec_driver_sql(_OPERATION_JOB_AND_EXECUTION, params).one_or_none()
    if row is None:
        return None
    ops, jobs = len(_OPERATION_ATTRIBUTES), len(_SEEN_JOB)
    execution = row[ops + jobs :]
    return SeenOperation(
        _operation_or_none(row[:ops]),
        SeenJob(*row[ops : ops + jobs]),
        None
        if execution[0] is None
        else Execution(
            **{key: value for (key, _), value in zip(_EXECUTION_ATTRIBUTES, execution, strict=True)}
        ),
    )


_OPEN = sa.orm.aliased(Operation, name="open_operation")
_NAMED = sa.orm.aliased(Operation, name="named_operation")
_JOB_AND_OPERATIONS = driver_sql(
    sa.select(
        *_SEEN_JOB,
        *(getattr(_OPEN, key) for key, _ in _OPERATION_ATTRIBUTES),
        *(getattr(_NAMED, key) for key, _ in _OPERATION_ATTRIBUTES),
    )
    # `NOT done`: the partial unique index's predicate (at most one row).
    .outerjoin(_OPEN, sa.and_(_OPEN.job_id == Job.id, sa.not_(_OPEN.done)))
    .outerjoin(_NAMED, _NAMED.id == sa.bindparam("op_key"))
    .where(Job.id == sa.bindparam("job_key"))
)


class SeenJobOperations(NamedTuple):
    """A job, its open operation and an operation named by id, as one unlocked statement read them (new
    objects outside the session)."""

    job: SeenJob
    open: Operation | None
    named: Operation | None


def job_and_operations(session: Session, *, job_id: str, op_id: str) -> SeenJobOperations | None:
    """The job, its open operation (None: none) and the operation `op_id` (None: unknown), in one round trip,
    unlocked; None for an unknown job."""
    row = (
        session.connection()
        .exec_driver_sql(_JOB_AND_OPERATIONS, {"job_key": job_id, "op_key": op_id})
        .one_or_none()
    )
    if row is None:
        return None
    jobs, ops = len(_SEEN_JOB), len(_OPERATION_ATTRIBUTES)
    return SeenJobOperations(
        SeenJob(*row[:jobs]),
        _operation_or_none(row[jobs : jobs + ops]),
        _operation_or_none(row[jobs + ops :]),
    )


def _operation_or_none(values: Sequence[Any]) -> Operation | None:
    """An operation from its columns in `_OPERATION_ATTRIBUTES` order; None for the NULLs of an outer join."""
    if values[0] is None:
        return None
    return Operation(**{key: value for (key, _), value in zip(_OPERATION_ATTRIBUTES, values, strict=True)})


NOT_CHANGED_BY_PATCH = frozenset(
    {
        "id",
        "seq",
        "job_id",
        "site_id",
        "workflow_id",
        "attempt",
        "lease_seconds",
        "create_time",
        "end_seq",
        "execution_count",
    }
)
"""Columns of `operations` a PATCH never changes: who and what it is, what the database numbers, and the
executions recorded (counted by their own statements, which leave the version a PATCH compares unchanged: a
PATCH that wrote the count it read back could undo one)."""
_PATCH_FIELDS = tuple(
    attr.key for attr in Operation.__mapper__.column_attrs if attr.key not in NOT_CHANGED_BY_PATCH
)
"""What a PATCH by the holding site writes of its operation (heartbeat, metadata, finishing): every other
column, as the rules left it (unchanged ones are written back as read, which the version check makes safe)."""
_OPERATION_VERSION = ("state", "cancel_requested", "update_time")
"""What tells an open operation as read from one changed since: every change of an open operation sets
`update_time`; `state` and `cancel_requested` are checked too, at no cost."""
_JOB_VERSION = JOB_MOVED_FIELDS
"""Likewise for its job: every change of a job sets `updated_at`."""


def job_locked_as_seen() -> sa.CTE:
    """A CTE that locks the job (`job_key`) FOR UPDATE and yields its id if it is still at its version as read
    (`job_seen_<column>` parameters, see `versions`); no row when it changed."""
    return _job_locked_if(*_JOB_VERSION)


def operation_as_seen(locked: sa.CTE) -> list[sa.ColumnElement[bool]]:
    """The conditions on `operations` of a write that holds only if the operation (`op_key`) is the locked
    job's, still open, and at its version as read (`op_seen_<attribute>` parameters, see `versions`).

    The job is locked first (the scalar subquery runs before the operation's row is locked or written): the
    lock order of the module docstring.
    """
    return [
        Operation.id == sa.bindparam("op_key"),
        Operation.job_id == sa.select(locked.c.id).scalar_subquery(),
        sa.not_(Operation.done),
        *(
            Operation.__mapper__.attrs[key].columns[0] == sa.bindparam(f"op_seen_{key}")
            for key in _OPERATION_VERSION
        ),
    ]


def seen_parameters(operation: Operation, job: SeenJob, seen: Versions) -> dict[str, Any]:
    """The parameters of `job_locked_as_seen` and `operation_as_seen` for an operation and its job read at
    the versions `seen`."""
    return {
        **{f"op_seen_{key}": value for key, value in zip(_OPERATION_VERSION, seen.operation, strict=True)},
        **{f"job_seen_{column}": value for column, value in zip(_JOB_VERSION, seen.job, strict=True)},
        "op_key": operation.id,
        "job_key": job.id,
    }


def _patch_as_seen_statement() -> sa.Select:
    """The statement of `patch_as_seen`, built once; parameter names as in `_claim_as_seen_statement`."""
    locked = job_locked_as_seen()
    operation_columns = {key: Operation.__mapper__.attrs[key].columns[0] for key in _PATCH_FIELDS}
    updated = (
        sa.update(Operation)
        .where(*operation_as_seen(locked))
        .values(
            {
                column: sa.bindparam(f"op_{key}", type_=column.type)
                for key, column in operation_columns.items()
            }
        )
        .returning(*Operation.__table__.c)
        .cte("updated")
    )
    return sa.select(*updated.c).add_cte(_job_moved(updated, sa.bindparam("job_changed")))


_PATCH_AS_SEEN = driver_sql(_patch_as_seen_statement())


class Versions(NamedTuple):
    """What `patch_as_seen` checks is unchanged: an operation's and its job's values as read."""

    operation: tuple[Any, ...]
    job: tuple[Any, ...]


def versions(operation: Operation, job: SeenJob) -> Versions:
    """The versions of an operation and its job, taken before the rules change them."""
    return Versions(
        tuple(getattr(operation, key) for key in _OPERATION_VERSION),
        tuple(getattr(job, column) for column in _JOB_VERSION),
    )


def patch_as_seen(
    session: Session, *, operation: Operation, job: SeenJob, seen: Versions
) -> Operation | None:
    """Write a PATCH decided on an operation and its job read at the versions `seen`, in one statement: lock
    the job if it is still as seen, write the operation's `_PATCH_FIELDS` if it is still open and as seen, and
    the job's status, attempts and update time if the rules changed them. None, and nothing written, when
    either changed meanwhile."""
    values = {key: getattr(operation, key) for key in _PATCH_FIELDS}
    # Driver-level parameters, as in `claim_as_seen`: JSON as text (the statement casts it); NULL stays NULL.
    for key in ("error", "extra_metadata"):
        values[key] = None if values[key] is None else json.dumps(values[key])
    params = {
        **{f"op_{key}": value for key, value in values.items()},
        **seen_parameters(operation, job, seen),
        "job_changed": versions(operation, job).job != seen.job,
        **moved_parameters(job),
    }
    row = session.connection().exec_driver_sql(_PATCH_AS_SEEN, params).mappings().one_or_none()
    if row is None:
        return None
    return Operation(**{key: row[column] for key, column in _OPERATION_ATTRIBUTES})


def execution_bytes() -> sa.ColumnElement[int]:
    """What an execution (a row of `executions` in the query) weighs in a page (`pages.row_bytes`) with its
    outputs, which the API shows with it in full."""
    outputs = (
        sa.select(sa.func.coalesce(sa.func.sum(row_bytes(DataResource.__table__)), 0))
        .where(DataResource.execution_id == Execution.id)
        .scalar_subquery()
    )
    return row_bytes(Execution.__table__) + outputs


_OPERATION_BYTES = row_bytes(Operation.__table__) + sa.func.coalesce(
    sa.select(execution_bytes()).where(Execution.id == Operation.result_execution_id).scalar_subquery(), 0
)
"""What an operation weighs in a page: its row, and its result, which the API shows with it in full."""


def list_operations(
    session: Session,
    *,
    page: PageParams,
    job_id: str | None = None,
    site_id: str | None = None,
    workflow_id: str | None = None,
    data_resource_id: str | None = None,
    done: bool | None = None,
) -> tuple[Sequence[Operation], str | None]:
    """One page of operations matching every given filter, in creation order."""
    stmt = sa.select(Operation)
    if job_id is not None:
        stmt = stmt.where(Operation.job_id == job_id)
    if site_id is not None:
        stmt = stmt.where(Operation.site_id == site_id)
    if workflow_id is not None:
        stmt = stmt.where(Operation.workflow_id == workflow_id)
    if data_resource_id is not None:
        stmt = stmt.where(
            Operation.job_id.in_(
                sa.select(JobInput.job_id).where(JobInput.data_resource_id == data_resource_id)
            )
        )
    if done is not None:
        # `done` and `NOT done`, as the partial indexes say (`done IS false` would not match them).
        stmt = stmt.where(Operation.done if done else sa.not_(Operation.done))
    return fetch_page(session, stmt, Operation.seq, page, weight=_OPERATION_BYTES)


def active_claim_lease_end(
    session: Session, *, site_id: str, data_resource_id: str, now: datetime
) -> datetime | None:
    """The latest lease end among `site_id`'s claims that grant access at `now` (open, lease not lapsed, no
    cancel requested: `rules.claim_grants_access`) on jobs that read `data_resource_id`; None when it holds
    none."""
    return session.scalar(
        sa.select(sa.func.max(Operation.lease_expire_time))
        .join(JobInput, JobInput.job_id == Operation.job_id)
        .where(
            JobInput.data_resource_id == data_resource_id,
            Operation.site_id == site_id,
            claim_grants_access(now),
        )
    )


def lapsed_operation_jobs(session: Session, *, now: datetime, limit: int) -> list[tuple[str, str]]:
    """(operation id, job id) of open operations whose lease lapsed by `now` (`rules.lapsed_lease`), oldest
    first.

    One range scan of the partial index on open operations by lease end (`ix_operations_open_lease`).
    """
    rows = session.execute(
        sa.select(Operation.id, Operation.job_id)
        .where(lapsed_lease(now))
        .order_by(Operation.lease_expire_time)
        .limit(limit)
    )
    return [(op_id, job_id) for op_id, job_id in rows]


def workflows_with_leases_lapsed(session: Session, *, since: datetime, now: datetime) -> list[str]:
    """The workflows of jobs whose claim's lease lapsed after `since` and by `now`, and whose ending gives the
    job back (`rules.claimed_under_lapsed_lease`): the jobs that became claimable in that time without an
    event (nothing notifies a lapse until something ends it, `store.notices`).

    A range of the partial index on open operations by lease end (`ix_operations_open_lease`)."""
    return list(
        session.scalars(
            sa.select(Job.workflow_id)
            .distinct()
            .join(Operation, Operation.job_id == Job.id)
            .where(claimed_under_lapsed_lease(now), Operation.lease_expire_time > since)
        )
    )


def not_done(session: Session, *, op_ids: Sequence[str]) -> set[str]:
    """Of the operations named, those that exist and are not done."""
    return set(
        session.scalars(sa.select(Operation.id).where(Operation.id.in_(op_ids), sa.not_(Operation.done)))
    )


def delete_finished(session: Session, *, now: datetime, limit: int) -> int:
    """Delete up to `limit` finished operations whose `expire_time` is before `now`; return how many."""
    doomed = (
        sa.select(Operation.id)
        # `done`, as the partial index on expire_time says.
        .where(Operation.done, Operation.expire_time < now)
        .order_by(Operation.expire_time)
        .limit(limit)
        .with_for_update(skip_locked=True)
        # Chosen once. As `IN (subquery)` the planner may put the subquery inside a nested loop, run again for
        # each operation, each run skipping the rows the statement had deleted already: seen deleting every
        # finished operation instead of `limit` once the table's statistics said it was nearly empty.
        .cte("doomed")
        .prefix_with("MATERIALIZED")
    )
    result = session.execute(
        sa.delete(Operation)
        .where(Operation.id.in_(sa.select(doomed.c.id)))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0
