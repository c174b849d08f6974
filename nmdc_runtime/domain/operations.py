"""Claims, leases and operations: the rules as pure functions, and the transactions that apply them.

Every entry point (the REST API, the Dagster lease reaper, the CLI) goes through the functions here, so a
lapsed lease, a cancel or a finished operation means the same thing wherever it is noticed.

Choices the API contract leaves open, made here once:

- **Attempts** are counted when a claim starts (`job.attempts += 1`; the operation's `attempt` is that number),
  so a site that vanishes mid-run has used an attempt even before the lease lapses. A release (or any
  operation that ends with error code `CANCELLED`, a cancel-requested one whose lease lapsed included) gives
  the attempt back.
- **Job status after an operation ends**: a result makes the job `succeeded`; an error (other than
  `CANCELLED`) or a lapsed lease makes it `failed` once `attempts >= max_attempts`, else `unclaimed`; a
  `CANCELLED` ending returns it to `unclaimed`. A job an admin has canceled stays `canceled` whatever its
  operation ends with (its execution is still recorded).
- **Lapse** (`lease_lapsed`): an open operation whose `lease_expire_time` has passed has lost its lease unless
  it is paused; `cancel_requested` overrides the pause (the holder keeps heartbeating while paused, which
  renews the lease as usual, so only a holder that has gone silent lets it pass). Whoever touches it first (a
  claim, a PATCH, a cancel, a pause, the reaper) ends it in its own transaction (`end_lapsed_operation`):
  as `expired` with error code `DEADLINE_EXCEEDED`, or, when cancellation was requested, as `canceled` with
  error code `CANCELLED` (the cancel request stands even though the holder never acted on it). A request
  that then fails with 409 still commits that ending (see `keep_expiries`).
- **What a lapse does to the job**: an expiry counts the attempt (`unclaimed`, or `failed` once attempts are
  used up). A lapsed cancel request is a `CANCELLED` ending: the attempt is given back, and the job returns
  to `unclaimed` when only the operation was canceled, or stays `canceled` when an admin canceled the job.
- **An admin's cancel** ends the operation at once (as `canceled`) when its `lease_expire_time` has passed,
  paused or not: nobody is heartbeating it. Otherwise it sets `cancel_requested` for the holder to act on;
  if the holder then goes silent, the lapse ends it `canceled` (see Lapse).
- **Finishing with a result** needs a *succeeded* execution of the same job by the holding site; anything
  else is invalid input (422 on the field `result.execution_id`): a failed run is reported as an error.
- **Metadata**: the keys `job_id`, `site_id`, `workflow_id`, `attempt` are read-only (422 when changed); the
  server-owned keys `state`, `lease_expire_time`, `cancel_requested`, `paused` are ignored when sent back;
  other keys are merged shallowly, and a `null` value removes a key. `progress` must be a number in
  [0, 100] and `message` a string. The merged site-supplied keys are capped: at most `MAX_METADATA_KEYS`
  (100) keys and `MAX_METADATA_BYTES` (64 KiB) as compact UTF-8 JSON, else 422 on the field `metadata`. A
  PATCH that leaves the metadata no bigger than it was (in keys and bytes) is always accepted, so an
  operation stored over a cap can still heartbeat and shrink.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from nmdc_runtime.config import Settings, get_settings
from nmdc_runtime.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    LeaseLost,
    NotFound,
    RuntimeDomainError,
)
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.domain.states import ErrorCode, ExecutionStatus, JobStatus, OperationState
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Execution, Job, Operation
from nmdc_runtime.store import operations as store

READ_ONLY_METADATA = ("job_id", "site_id", "workflow_id", "attempt")
"""Metadata keys a PATCH may send back unchanged but never change."""
SERVER_METADATA = ("state", "lease_expire_time", "cancel_requested", "paused")
"""Metadata keys the server owns; values sent in a PATCH are ignored."""
MAX_METADATA_KEYS = 100
"""At most this many site-supplied metadata keys once a PATCH is merged."""
MAX_METADATA_BYTES = 64 * 1024
"""At most this many bytes of site-supplied metadata, as compact UTF-8 JSON, once a PATCH is merged."""

# --- the moves -----------------------------------------------------------------------------------------

S = OperationState
OPERATION_MOVES: dict[OperationState, frozenset[OperationState]] = {
    S.RUNNING: frozenset({S.PAUSED, S.SUCCEEDED, S.FAILED, S.CANCELED, S.EXPIRED}),
    # A paused lease never lapses, so a paused operation cannot expire (with a cancel request it lapses
    # into `canceled`); the site may still finish it.
    S.PAUSED: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
}
"""Every allowed change of an operation's state; finished operations never change again."""

J = JobStatus
JOB_MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    J.UNCLAIMED: frozenset({J.CLAIMED, J.CANCELED}),
    J.CLAIMED: frozenset({J.UNCLAIMED, J.SUCCEEDED, J.FAILED, J.CANCELED}),
    J.SUCCEEDED: frozenset(),
    J.FAILED: frozenset(),
    J.CANCELED: frozenset(),
}
"""Every allowed change of a job's status."""


def can_move_operation(source: OperationState, target: OperationState) -> bool:
    """Whether an operation may go from `source` to `target`."""
    return target in OPERATION_MOVES[OperationState(source)]


def can_move_job(source: JobStatus, target: JobStatus) -> bool:
    """Whether a job may go from `source` to `target`."""
    return target in JOB_MOVES[JobStatus(source)]


def _move_operation(op: Operation, target: OperationState) -> None:
    if not can_move_operation(OperationState(op.state), target):
        raise Conflict(f"operation {op.id} is {op.state}; it cannot become {target}")
    op.state = target.value
    op.done = target.done


def _move_job(job: Job, target: JobStatus) -> None:
    if job.status == target:
        return
    if not can_move_job(JobStatus(job.status), target):
        raise Conflict(f"job {job.id} is {job.status}; it cannot become {target}")
    job.status = target.value


# --- pure rules ----------------------------------------------------------------------------------------


class ClaimDecision(StrEnum):
    """What a claim request gets."""

    CREATED = "created"
    """A new operation (HTTP 201)."""
    EXISTING = "existing"
    """The caller already holds the active claim: the same operation again (HTTP 200)."""


def lease_lapsed(op: Operation, *, now: datetime) -> bool:
    """Whether an open operation has lost its lease: its lease ended at or before `now`, and it is not paused
    (or it is, but cancellation has been requested: a pause does not keep a cancel waiting forever)."""
    return not op.done and (not op.paused or bool(op.cancel_requested)) and op.lease_expire_time <= now


def capabilities_cover(site_capabilities: list[str], required: list[str]) -> bool:
    """Whether a site has every capability a workflow requires."""
    return set(required) <= set(site_capabilities)


def decide_claim(
    *,
    job_status: JobStatus,
    holder_site_id: str | None,
    site_id: str,
    site_capabilities: list[str],
    required_capabilities: list[str],
) -> ClaimDecision:
    """What a claim by `site_id` gets, given the job's status and who holds its (unlapsed) open operation.

    Forbidden when the site lacks a required capability; Conflict when the job is finished or canceled or
    another site holds the claim.
    """
    if not capabilities_cover(site_capabilities, required_capabilities):
        missing = sorted(set(required_capabilities) - set(site_capabilities))
        raise Forbidden(f"site {site_id} lacks required capabilities: {', '.join(missing)}")
    if JobStatus(job_status).terminal:
        raise Conflict(f"the job is {job_status}")
    if holder_site_id == site_id:
        return ClaimDecision.EXISTING
    if holder_site_id is not None:
        raise Conflict("another site holds an active claim on this job")
    return ClaimDecision.CREATED


def job_after_operation(
    *, job_status: JobStatus, attempts: int, max_attempts: int, op_state: OperationState
) -> tuple[JobStatus, int]:
    """The job's (status, attempts) once its operation has ended in `op_state` (see the module docstring)."""
    op_state = OperationState(op_state)
    if not op_state.done:
        raise ValueError(f"{op_state} is not a finished state")
    if op_state is OperationState.CANCELED:
        # Given back: a release or a cancel is not a failed attempt.
        attempts = max(attempts - 1, 0)
    if JobStatus(job_status) is not JobStatus.CLAIMED:
        # An admin canceled the job meanwhile; that decision stands.
        return JobStatus(job_status), attempts
    if op_state is OperationState.SUCCEEDED:
        return JobStatus.SUCCEEDED, attempts
    if op_state is OperationState.CANCELED:
        return JobStatus.UNCLAIMED, attempts
    return (JobStatus.FAILED if attempts >= max_attempts else JobStatus.UNCLAIMED), attempts


def state_for_error(code: str) -> OperationState:
    """The state an operation ends in when finished with an error of this code."""
    return OperationState.CANCELED if code == ErrorCode.CANCELLED else OperationState.FAILED


def merged_metadata(op: Operation, patch: Mapping[str, Any]) -> dict[str, Any]:
    """The operation's site-supplied metadata with `patch` merged in; InvalidInput for a read-only change."""
    for key in READ_ONLY_METADATA:
        if key in patch and patch[key] != getattr(op, key):
            raise InvalidInput(f"metadata.{key} is read-only", field=f"metadata.{key}", location="body")
    merged = dict(op.extra_metadata or {})
    for key, value in patch.items():
        if key in READ_ONLY_METADATA or key in SERVER_METADATA:
            continue
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    progress = merged.get("progress")
    if progress is not None and (
        isinstance(progress, bool) or not isinstance(progress, int | float) or not 0 <= progress <= 100
    ):
        raise InvalidInput(
            "metadata.progress must be a number from 0 to 100", field="metadata.progress", location="body"
        )
    message = merged.get("message")
    if message is not None and not isinstance(message, str):
        raise InvalidInput("metadata.message must be a string", field="metadata.message", location="body")
    _check_metadata_size(op.extra_metadata or {}, merged)
    return merged


def metadata_size(metadata: Mapping[str, Any]) -> int:
    """The size in bytes of `metadata` as compact UTF-8 JSON (what `MAX_METADATA_BYTES` limits)."""
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())


def _check_metadata_size(before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """InvalidInput when `after` exceeds a cap and is bigger than `before` (see the module docstring)."""
    size_after = metadata_size(after)
    if len(after) <= MAX_METADATA_KEYS and size_after <= MAX_METADATA_BYTES:
        return
    if len(after) <= len(before) and size_after <= metadata_size(before):
        return
    if len(after) > MAX_METADATA_KEYS:
        reason = f"{len(after)} keys; at most {MAX_METADATA_KEYS} are allowed"
    else:
        reason = f"{size_after} bytes as compact JSON; at most {MAX_METADATA_BYTES} are allowed"
    raise InvalidInput(f"metadata would hold {reason}", field="metadata", location="body")


def start_operation(job: Job, *, site_id: str, now: datetime, lease_seconds: int) -> Operation:
    """A new open operation for `site_id` on `job`, counting the attempt and marking the job claimed."""
    _move_job(job, JobStatus.CLAIMED)
    job.attempts += 1
    job.updated_at = now
    return Operation(
        id=new_id("op"),
        job_id=job.id,
        site_id=site_id,
        workflow_id=job.workflow_id,
        attempt=job.attempts,
        state=OperationState.RUNNING.value,
        done=False,
        extra_metadata={},
        cancel_requested=False,
        paused=False,
        lease_expire_time=now + timedelta(seconds=lease_seconds),
        create_time=now,
        update_time=now,
    )


def finish_operation(
    op: Operation,
    job: Job,
    *,
    state: OperationState,
    now: datetime,
    retention_seconds: int,
    execution_id: str | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """End `op` in `state` with its result or error, and move its job on (see `job_after_operation`)."""
    if (execution_id is None) == (error is None):
        raise ValueError("a finished operation has exactly one of a result and an error")
    if (execution_id is not None) != (state is OperationState.SUCCEEDED):
        raise ValueError("only a succeeded operation has a result")
    _move_operation(op, state)
    op.result_execution_id = execution_id
    op.error = error
    op.paused = False
    op.update_time = now
    op.expire_time = now + timedelta(seconds=retention_seconds)
    status, attempts = job_after_operation(
        job_status=JobStatus(job.status), attempts=job.attempts, max_attempts=job.max_attempts, op_state=state
    )
    _move_job(job, status)
    job.attempts = attempts
    job.updated_at = now


def expire_operation(op: Operation, job: Job, *, now: datetime, retention_seconds: int) -> None:
    """End an operation whose lease lapsed: `expired`, error DEADLINE_EXCEEDED; the attempt stays counted."""
    finish_operation(
        op,
        job,
        state=OperationState.EXPIRED,
        now=now,
        retention_seconds=retention_seconds,
        error={
            "code": ErrorCode.DEADLINE_EXCEEDED.value,
            "message": "the claim's lease lapsed without a heartbeat",
            "details": {"lease_expire_time": _rfc3339(op.lease_expire_time)},
        },
    )


def cancel_lapsed_operation(op: Operation, job: Job, *, now: datetime, retention_seconds: int) -> None:
    """End a cancel-requested operation whose lease lapsed: `canceled`, error CANCELLED; attempt given back."""
    finish_operation(
        op,
        job,
        state=OperationState.CANCELED,
        now=now,
        retention_seconds=retention_seconds,
        error=cancelled_error(
            "cancellation was requested and the holder's lease lapsed after the cancel request",
            lease_expire_time=_rfc3339(op.lease_expire_time),
        ),
    )


def end_lapsed_operation(op: Operation, job: Job, *, now: datetime, retention_seconds: int) -> OperationState:
    """End an operation whose lease lapsed (the one rule, wherever the lapse is noticed): `canceled` when
    cancellation was requested, else `expired`. Returns the state it ended in."""
    if op.cancel_requested:
        cancel_lapsed_operation(op, job, now=now, retention_seconds=retention_seconds)
        return OperationState.CANCELED
    expire_operation(op, job, now=now, retention_seconds=retention_seconds)
    return OperationState.EXPIRED


def cancelled_error(message: str, **details: Any) -> dict[str, Any]:
    """The error of an operation that ends canceled."""
    return {"code": ErrorCode.CANCELLED.value, "message": message, "details": details}


def authorize_holder(op: Operation, principal: Principal, *, admin_allowed: bool) -> None:
    """Forbidden unless the caller is the holding site (or, when allowed, a runtime admin)."""
    if principal.is_site:
        if principal.site_id != op.site_id:
            raise Forbidden("this operation belongs to another site")
        return
    if not (admin_allowed and principal.admin):
        raise Forbidden("only the holding site" + (" or an admin" if admin_allowed else "") + " may do this")


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# --- transactions --------------------------------------------------------------------------------------

_KEEP = "nmdc_keep_on_error"


@contextmanager
def keep_expiries(session: Session) -> Iterator[None]:
    """Keep the lease expiries a failing request made, and nothing else it did.

    A request that meets a lapsed lease ends that operation, then often answers 409 or 404; the error
    would roll the expiry back with the rest. On a domain error this rolls back, applies the same lapse rule
    again to the jobs noted, and commits that alone (it is idempotent: a lease lapsed once stays lapsed).
    """
    session.info.pop(_KEEP, None)
    try:
        yield
    except RuntimeDomainError:
        noted = session.info.pop(_KEEP, None)
        if noted:
            session.rollback()
            now, settings, job_ids = noted
            for job_id in sorted(job_ids):
                job = store.lock_job(session, job_id=job_id)
                if job is not None:
                    expire_if_lapsed(
                        session, store.open_operation(session, job_id=job.id), job, now=now, settings=settings
                    )
            session.info.pop(_KEEP, None)
            session.commit()
        raise
    finally:
        session.info.pop(_KEEP, None)


def _settings(settings: Settings | None) -> Settings:
    return settings or get_settings()


def expire_if_lapsed(
    session: Session, op: Operation | None, job: Job, *, now: datetime, settings: Settings
) -> Operation | None:
    """`op` when it is open and holds its lease; None when there is none, or (having ended it with
    `end_lapsed_operation`) it lapsed.

    `op` and `job` must be locked. Endings are noted for `keep_expiries`.
    """
    if op is None or op.done:
        return None
    if not lease_lapsed(op, now=now):
        return op
    end_lapsed_operation(op, job, now=now, retention_seconds=settings.operation_retention_seconds)
    session.flush()
    noted = session.info.setdefault(_KEEP, (now, settings, set()))
    noted[2].add(job.id)
    return None


def _lock_operation(session: Session, *, op_id: str) -> tuple[Operation, Job]:
    """The operation and its job, both locked, job first (the lock order everywhere)."""
    job_id = store.operation_job_id(session, op_id=op_id)
    job = store.lock_job_or_404(session, job_id=job_id)
    op = store.get_operation(session, op_id=op_id, lock=True)
    return op, job


def _open_operation_for(
    session: Session, op: Operation, job: Job, *, now: datetime, settings: Settings
) -> Operation:
    """`op`, when it is open and still holds its lease; else Conflict (expiring it first if it lapsed)."""
    if op.done:
        raise Conflict(f"operation {op.id} is finished ({op.state})")
    if expire_if_lapsed(session, op, job, now=now, settings=settings) is None:
        raise LeaseLost(
            f"operation {op.id} lost its lease: it lapsed at {_rfc3339(op.lease_expire_time)} ({op.state})"
        )
    return op


def claim_job(
    session: Session, *, job_id: str, site_id: str, now: datetime, settings: Settings | None = None
) -> tuple[Operation, bool]:
    """Claim a job for a site: (the operation, whether it is new). Atomic under concurrency.

    The job row is locked for the whole transaction, so claims of one job queue behind each other; a lapsed
    open operation is expired first, so it never blocks a claim.
    """
    settings = _settings(settings)
    job = store.lock_job_or_404(session, job_id=job_id)
    current = expire_if_lapsed(
        session, store.open_operation(session, job_id=job.id), job, now=now, settings=settings
    )
    decision = decide_claim(
        job_status=JobStatus(job.status),
        holder_site_id=current.site_id if current else None,
        site_id=site_id,
        site_capabilities=store.site_capabilities(session, site_id=site_id),
        required_capabilities=store.workflow_required_capabilities(session, workflow_id=job.workflow_id),
    )
    if decision is ClaimDecision.EXISTING:
        return current, False
    op = start_operation(job, site_id=site_id, now=now, lease_seconds=settings.claim_lease_seconds)
    store.insert_operation(session, op)
    return op, True


def patch_operation(
    session: Session,
    *,
    op_id: str,
    principal: Principal,
    now: datetime,
    metadata: Mapping[str, Any] | None = None,
    done: bool | None = None,
    execution_id: str | None = None,
    error: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> Operation:
    """Apply a PATCH from the holding site (renewing its lease) or an admin: merge metadata, maybe finish."""
    settings = _settings(settings)
    op, job = _lock_operation(session, op_id=op_id)
    authorize_holder(op, principal, admin_allowed=True)
    _open_operation_for(session, op, job, now=now, settings=settings)

    finishing = done is True or execution_id is not None or error is not None
    if done is False and finishing:
        raise InvalidInput(
            "a result or an error finishes the operation: send done true", field="done", location="body"
        )
    if finishing and (execution_id is None) == (error is None):
        raise InvalidInput("finishing needs exactly one of result and error", field="done", location="body")
    extra = merged_metadata(op, metadata) if metadata is not None else op.extra_metadata
    if execution_id is not None:
        _check_result(session, op, execution_id)

    op.extra_metadata = extra
    op.update_time = now
    if principal.is_site:
        op.lease_expire_time = now + timedelta(seconds=settings.claim_lease_seconds)
    if finishing:
        state = OperationState.SUCCEEDED if execution_id is not None else state_for_error(error["code"])
        finish_operation(
            op,
            job,
            state=state,
            now=now,
            retention_seconds=settings.operation_retention_seconds,
            execution_id=execution_id,
            error=dict(error) if error is not None else None,
        )
    session.flush()
    return op


def _check_result(session: Session, op: Operation, execution_id: str) -> None:
    execution = session.get(Execution, execution_id)
    if execution is None or execution.job_id != op.job_id or execution.site_id != op.site_id:
        raise InvalidInput(
            f"no execution {execution_id!r} of job {op.job_id} by site {op.site_id}",
            field="result.execution_id",
            location="body",
        )
    if execution.status != ExecutionStatus.SUCCEEDED:
        raise InvalidInput(
            f"execution {execution_id} failed: finish the operation with an error instead",
            field="result.execution_id",
            location="body",
        )


def cancel_operation(
    session: Session, *, op_id: str, principal: Principal, now: datetime, settings: Settings | None = None
) -> Operation:
    """`:cancel`. The holding site releases the job; an admin requests cancellation (or, when nobody holds
    the lease any more, ends the operation at once)."""
    settings = _settings(settings)
    op, job = _lock_operation(session, op_id=op_id)
    authorize_holder(op, principal, admin_allowed=True)
    if principal.is_site:
        _open_operation_for(session, op, job, now=now, settings=settings)
        _release(op, job, now=now, settings=settings)
    else:
        if op.done:
            raise Conflict(f"operation {op.id} is finished ({op.state})")
        _request_cancel(op, job, now=now, settings=settings, reason="canceled by an admin")
    session.flush()
    return op


def _release(op: Operation, job: Job, *, now: datetime, settings: Settings) -> None:
    finish_operation(
        op,
        job,
        state=OperationState.CANCELED,
        now=now,
        retention_seconds=settings.operation_retention_seconds,
        error=cancelled_error("released by the holding site"),
    )


def _request_cancel(op: Operation, job: Job, *, now: datetime, settings: Settings, reason: str) -> None:
    op.cancel_requested = True
    op.update_time = now
    if lease_lapsed(op, now=now):  # with cancel_requested set: paused or not
        # Nobody is heartbeating it, so nobody would act on the request.
        finish_operation(
            op,
            job,
            state=OperationState.CANCELED,
            now=now,
            retention_seconds=settings.operation_retention_seconds,
            error=cancelled_error(reason + "; the holder's lease had lapsed"),
        )


def pause_operation(
    session: Session, *, op_id: str, now: datetime, settings: Settings | None = None
) -> Operation:
    """`:pause` (admin): the lease stops lapsing until `:resume`. Pausing a paused operation changes nothing."""
    settings = _settings(settings)
    op, job = _lock_operation(session, op_id=op_id)
    _open_operation_for(session, op, job, now=now, settings=settings)
    if not op.paused:
        _move_operation(op, OperationState.PAUSED)
        op.paused = True
        op.update_time = now
    session.flush()
    return op


def resume_operation(
    session: Session, *, op_id: str, now: datetime, settings: Settings | None = None
) -> Operation:
    """`:resume` (admin): running again, with a fresh lease period. Resuming a running operation changes nothing."""
    settings = _settings(settings)
    op, job = _lock_operation(session, op_id=op_id)
    _open_operation_for(session, op, job, now=now, settings=settings)
    if op.paused:
        _move_operation(op, OperationState.RUNNING)
        op.paused = False
        op.lease_expire_time = now + timedelta(seconds=settings.claim_lease_seconds)
        op.update_time = now
    session.flush()
    return op


def cancel_job(session: Session, *, job_id: str, now: datetime, settings: Settings | None = None) -> Job:
    """`POST /jobs/{id}:cancel` (admin): the job becomes canceled; its active operation gets cancel_requested.

    Canceling a canceled job changes nothing; a succeeded or failed job is a Conflict.
    """
    settings = _settings(settings)
    job = store.lock_job_or_404(session, job_id=job_id)
    op = expire_if_lapsed(
        session, store.open_operation(session, job_id=job.id), job, now=now, settings=settings
    )
    if job.status == JobStatus.CANCELED:
        return job
    _move_job(job, JobStatus.CANCELED)
    job.updated_at = now
    if op is not None:
        _request_cancel(op, job, now=now, settings=settings, reason="the job was canceled by an admin")
    session.flush()
    return job


def release_job(
    session: Session, *, job_id: str, site_id: str, now: datetime, settings: Settings | None = None
) -> Job:
    """`POST /jobs/{id}:release` (holding site): its operation ends canceled; the attempt is given back.

    NotFound when the site holds no active claim on the job (a lapsed one included).
    """
    settings = _settings(settings)
    job = store.lock_job_or_404(session, job_id=job_id)
    op = expire_if_lapsed(
        session, store.open_operation(session, job_id=job.id), job, now=now, settings=settings
    )
    if op is None or op.site_id != site_id:
        raise NotFound(f"site {site_id} holds no active claim on job {job_id}")
    _release(op, job, now=now, settings=settings)
    session.flush()
    return job


def active_operation_for_execution(
    session: Session,
    *,
    job_id: str,
    operation_id: str,
    site_id: str,
    now: datetime,
    settings: Settings | None = None,
) -> tuple[Operation, Job]:
    """The job's active operation, locked with the job, when `site_id` holds it and `operation_id` names it.

    NotFound for an unknown job. When `operation_id` is one of the job's operations: Forbidden if it is
    another site's, Conflict if it has ended (a late write; a lapsed lease is expired here). Otherwise
    (unknown, or another job's): InvalidInput if the caller holds the job's active claim, Forbidden if
    another site does, Conflict if nobody does.
    """
    settings = _settings(settings)
    job = store.lock_job_or_404(session, job_id=job_id)
    active = expire_if_lapsed(
        session, store.open_operation(session, job_id=job.id), job, now=now, settings=settings
    )
    named = (
        active if active is not None and active.id == operation_id else session.get(Operation, operation_id)
    )
    if named is not None and named.job_id == job.id:
        if named.site_id != site_id:
            raise Forbidden("this operation belongs to another site")
        if named is not active:
            raise LeaseLost(
                f"operation {operation_id} has ended: site {site_id} holds no active claim on {job_id}"
            )
        return active, job
    if active is not None and active.site_id == site_id:
        raise InvalidInput(
            f"no operation {operation_id!r} of job {job_id}", field="operation_id", location="body"
        )
    if active is not None:
        raise Forbidden("another site holds this job's claim")
    raise LeaseLost(f"site {site_id} holds no active claim on job {job_id}")


def expire_lapsed_operations(
    session: Session, *, now: datetime, limit: int = 1000, settings: Settings | None = None
) -> list[str]:
    """End up to `limit` open operations whose lease lapsed before `now` (see `lease_lapsed`); return their ids.

    Each ends by `end_lapsed_operation`, the rule a claim applies when it meets a lapsed lease: `expired`
    (error DEADLINE_EXCEEDED; its job goes back to `unclaimed`, or to `failed` when its attempts are used up),
    or, when cancellation was requested (paused or not), `canceled` (error CANCELLED; the attempt is given
    back and the job goes back to `unclaimed` unless it was canceled). `expire_time` = now + the retention
    period. Jobs another transaction has locked are skipped (that transaction applies the same
    rule itself, or renews the lease). `settings` gives the retention period (default: `get_settings()`).
    The caller commits.
    """
    settings = _settings(settings)
    expired: list[str] = []
    for op_id, job_id in store.lapsed_operation_jobs(session, now=now, limit=limit):
        job = store.lock_job(session, job_id=job_id, skip_locked=True)
        if job is None:
            continue
        op = store.open_operation(session, job_id=job.id)
        if op is None or op.id != op_id or not lease_lapsed(op, now=now):
            continue
        end_lapsed_operation(op, job, now=now, retention_seconds=settings.operation_retention_seconds)
        expired.append(op_id)
    session.flush()
    return expired


def delete_finished_operations(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """Delete up to `limit` finished operations whose `expire_time` is before `now`; return how many.

    Executions are kept (they do not reference operations by foreign key). The caller commits.
    """
    return store.delete_finished(session, now=now, limit=limit)
