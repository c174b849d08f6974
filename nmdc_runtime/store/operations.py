"""Queries on jobs' claims and operations: row locks, inserts, lists and the reaper's scans.

Lock order, everywhere: the job row first, then its operation. Claims, PATCHes, cancels and the lease reaper
all follow it, so two of them never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import Conflict, NotFound
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Job, JobInput, Operation, Site, Workflow
from nmdc_runtime.schemas.common import PageParams
from nmdc_runtime.store.pages import fetch_page
from nmdc_runtime.store.rules import lapsed_lease

OPEN_OPERATION_INDEX = "uq_operations_open_job"


def lock_job(session: Session, *, job_id: str, skip_locked: bool = False) -> Job | None:
    """The job row, locked FOR UPDATE until the transaction ends; None when there is no such job
    (or, with `skip_locked`, when another transaction holds it)."""
    stmt = sa.select(Job).where(Job.id == job_id).with_for_update(skip_locked=skip_locked)
    # populate_existing: a row already in the session must show what the lock just read.
    return session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()


def lock_job_or_404(session: Session, *, job_id: str) -> Job:
    """The job row locked FOR UPDATE, or NotFound."""
    job = lock_job(session, job_id=job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def open_operation(session: Session, *, job_id: str) -> Operation | None:
    """The job's unfinished operation (at most one exists), locked FOR UPDATE."""
    stmt = (
        sa.select(Operation)
        .where(Operation.job_id == job_id, sa.not_(Operation.done))  # the partial unique index's predicate
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one_or_none()


def get_operation(session: Session, *, op_id: str, lock: bool = False) -> Operation:
    """One operation, optionally locked FOR UPDATE, or NotFound."""
    stmt = sa.select(Operation).where(Operation.id == op_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise NotFound(f"no operation {op_id!r}")
    return row


def find_operation(session: Session, *, op_id: str) -> Operation | None:
    """One operation (unlocked), or None."""
    return session.get(Operation, op_id)


def operation_job_id(session: Session, *, op_id: str) -> str:
    """The job an operation belongs to (unlocked), or NotFound: callers lock the job before the operation."""
    job_id = session.scalar(sa.select(Operation.job_id).where(Operation.id == op_id))
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


def claim_terms(session: Session, *, site_id: str, workflow_id: str) -> ClaimTerms:
    """The site's capabilities and the workflow's requirements and lease, in one round trip; NotFound for an
    unknown site."""
    site = sa.select(Site.capabilities).where(Site.id == site_id).scalar_subquery()
    row = session.execute(
        sa.select(site, Workflow.required_capabilities, Workflow.lease_seconds).where(
            Workflow.id == workflow_id
        )
    ).one()
    if row[0] is None:
        raise NotFound(f"no site {site_id!r}")
    return ClaimTerms(list(row[0]), list(row[1] or []), row[2])


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
        stmt = stmt.where(Operation.done.is_(done))
    return fetch_page(session, stmt, Operation.seq, page)


def active_claim_lease_end(
    session: Session, *, site_id: str, data_resource_id: str, now: datetime
) -> datetime | None:
    """The latest lease end among `site_id`'s active claims (open, lease not lapsed at `now`:
    `rules.lapsed_lease`) on jobs that read `data_resource_id`; None when it holds none."""
    return session.scalar(
        sa.select(sa.func.max(Operation.lease_expire_time))
        .join(JobInput, JobInput.job_id == Operation.job_id)
        .where(
            JobInput.data_resource_id == data_resource_id,
            Operation.site_id == site_id,
            sa.not_(Operation.done),
            sa.not_(lapsed_lease(now)),
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


def delete_finished(session: Session, *, now: datetime, limit: int) -> int:
    """Delete up to `limit` finished operations whose `expire_time` is before `now`; return how many."""
    doomed = (
        sa.select(Operation.id)
        # `done`, as the partial index on expire_time says.
        .where(Operation.done, Operation.expire_time < now)
        .order_by(Operation.expire_time)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = session.execute(
        sa.delete(Operation).where(Operation.id.in_(doomed)).execution_options(synchronize_session=False)
    )
    return result.rowcount or 0
