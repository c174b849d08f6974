"""Transaction boundaries, and the one way to lock a job and its operation under the lapse rule.

Lock order, everywhere: the job row first, then its operation. Claims, PATCHes, cancels and the lease reaper
all follow it, so two of them never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy.orm import Session

from nmdc_runtime.db import AUTOCOMMIT_ENGINE, READS_ONLY
from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.errors import Conflict, LeaseLost, RuntimeDomainError
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.models import Job, Operation
from nmdc_runtime.store import idempotency as idempotency_store
from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store.idempotency import IdempotentRequest

_LAPSES = "nmdc_lapses"
"""session.info key: the jobs whose lapsed lease this transaction ended, with the clock and policy used."""


@contextmanager
def transaction(session: Session) -> Iterator[Session]:
    """One state change: committed when the block succeeds, rolled back when it raises.

    A request that meets a lapsed lease ends that operation, then often fails (409, 404); the error would roll
    the ending back with the rest. On a domain error this rolls back, applies the lapse rule again to the jobs
    noted (it is idempotent: a lease lapsed once stays lapsed) and commits that alone, then re-raises.
    """
    if session.info.get(READS_ONLY):
        # Its statements would each commit alone: locks released at once, changes made by halves.
        raise RuntimeError(
            "a read session cannot hold a transaction: take a session of Database.sessionmaker"
        )
    session.info[_LAPSES] = {}
    try:
        yield session
        session.commit()
    except RuntimeDomainError:
        lapses = session.info.pop(_LAPSES, {})
        session.rollback()
        if lapses:
            for job_id, (now, policy) in sorted(lapses.items()):
                job = operations_store.lock_job(session, job_id=job_id)
                if job is not None:
                    _end_if_lapsed(
                        session, job, operations_store.open_operation(session, job_id=job_id), now, policy
                    )
            session.commit()
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info.pop(_LAPSES, None)


@contextmanager
def statements_commit(session: Session) -> Iterator[Session]:
    """Each statement on `session` is a transaction of its own (autocommit), for a change that one statement
    makes whole: it saves the BEGIN and COMMIT round trips. It must be the session's first use; after the
    block the session is as new (its connection back in the pool, ready for ordinary transactions).

    A session made by `Database.sessionmaker` runs the block on the database's autocommit pool; any other
    session switches its own connection to autocommit (and back, a round trip, when it returns to the pool).
    """
    bound, autocommit = session.bind, session.info.get(AUTOCOMMIT_ENGINE)
    if autocommit is not None:
        session.bind = autocommit
    else:
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    try:
        yield session
    except BaseException:
        # A statement that failed may have lost its connection (a database past its deadline): only a
        # rollback lets go of that; a commit would fail again, on a PendingRollbackError in the place of the
        # error that says what happened (500 instead of 503).
        try:
            session.rollback()
        finally:
            session.bind = bound
        raise
    # Nothing is open to commit (no round trip): this hands the connection back, and, unlike a rollback,
    # keeps what the statements loaded (the sessions here do not expire on commit).
    try:
        session.commit()
    finally:
        session.bind = bound


def _end_if_lapsed(
    session: Session, job: Job, op: Operation | None, now: datetime, policy: Policy
) -> Operation | None:
    """`op` when it is open and holds its lease; None when there is none, or it lapsed and was ended here (and
    noted, so that the ending outlives an error this request may still answer: see `transaction`)."""
    if op is None or op.done:
        return None
    if not operations_rules.lease_lapsed(op, now=now):
        return op
    operations_rules.end_lapsed_operation(
        op, job, now=now, retention_seconds=policy.operation_retention_seconds
    )
    session.flush()
    session.info.setdefault(_LAPSES, {})[job.id] = (now, policy)
    return None


def locked_job(
    session: Session, *, job_id: str, now: datetime, policy: Policy
) -> tuple[Job, Operation | None]:
    """The job, locked, and its active operation (locked), after the lapse rule: an open operation whose
    lease lapsed is ended here (`operations_rules.end_lapsed_operation`) and None comes back. NotFound for an unknown job.
    """
    job = operations_store.lock_job_or_404(session, job_id=job_id)
    return job, _end_if_lapsed(
        session, job, operations_store.open_operation(session, job_id=job.id), now, policy
    )


def locked_operation(session: Session, *, op_id: str) -> tuple[Operation, Job]:
    """The operation and its job, both locked (job first), as they are: the caller decides what the lapse rule
    means for its request (`require_active`). NotFound for an unknown operation."""
    job = operations_store.lock_job_or_404(
        session, job_id=operations_store.operation_job_id(session, op_id=op_id)
    )
    return operations_store.get_operation(session, op_id=op_id, lock=True), job


def require_active(session: Session, op: Operation, job: Job, *, now: datetime, policy: Policy) -> None:
    """Conflict unless the locked `op` is open and holds its lease: LeaseLost when the lease lapsed (the
    operation is ended here first), a plain Conflict when it had ended before."""
    if op.done:
        raise Conflict(f"operation {op.id} is finished ({op.state})")
    if _end_if_lapsed(session, job, op, now, policy) is None:
        raise LeaseLost(operations_rules.lost_lease_message(op))


T = TypeVar("T")


class Once(NamedTuple, Generic[T]):
    """What an idempotent request made: the resource, and whether an earlier request with its key made it."""

    value: T
    replayed: bool


def run_once(
    session: Session,
    *,
    request: IdempotentRequest,
    create: Callable[[], T],
    document: Callable[[T], Any],
    restore: Callable[[Any], T],
) -> Once[T]:
    """Run `create` at most once per (principal, Idempotency-Key) (see `store.idempotency`), inside the caller's
    transaction: its result is remembered as `document(result)`, and a repeat gets `restore(document)`, what
    the first request created as it was then, and creates nothing."""
    if request.key is None:
        return Once(create(), replayed=False)
    earlier = idempotency_store.claim_key(session, request=request)
    if earlier is not None:
        return Once(restore(earlier), replayed=True)
    value = create()
    idempotency_store.remember_created(session, request=request, created=document(value))
    return Once(value, replayed=False)
