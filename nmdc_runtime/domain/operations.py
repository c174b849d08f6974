"""Claims, leases and operations: the rules, as pure functions over a job and its operation.

No I/O here: `nmdc_runtime.services` locks the rows, calls these rules and commits, for every entry point
(the REST API, the Dagster lease reaper, the CLI), so a lapsed lease, a cancel or a finished operation means
the same thing wherever it is noticed. Rules that queries need too have an SQL form in
`nmdc_runtime.store.rules`, and `tests/integration/test_rules_agree.py` proves the two forms agree.

Choices the API contract leaves open, made here once:

- **Attempts** are counted when a claim starts (`job.attempts += 1`; the operation's `attempt` is that number),
  so a site that vanishes mid-run has used an attempt even before the lease lapses. A release (or any
  operation that ends with error code `CANCELLED`, a cancel-requested one whose lease lapsed included) gives
  the attempt back, whatever the release's reason: `SITE_FAULT` (the site's own failure) or `SHUTDOWN` (or
  none) says whose the failure was, in `error.details.reason`, for whoever judges sites, not for the job.
- **Job status after an operation ends**: a result makes the job `succeeded`; an error (other than
  `CANCELLED`) or a lapsed lease makes it `failed` once `attempts >= max_attempts`, else `unclaimed`; a
  `CANCELLED` ending returns it to `unclaimed`. A job an admin has canceled stays `canceled` whatever its
  operation ends with (its execution is still recorded).
- **Lapse** (`lease_lapsed`): an open operation whose `lease_expire_time` has passed (or is exactly now) has
  lost its lease unless it is paused; `cancel_requested` overrides the pause (the holder keeps heartbeating while paused, which
  renews the lease as usual, so only a holder that has gone silent lets it pass). Whoever touches it first (a
  claim, a PATCH, a cancel, a pause, the reaper) ends it in its own transaction (`end_lapsed_operation`):
  as `expired` with error code `DEADLINE_EXCEEDED`, or, when cancellation was requested, as `canceled` with
  error code `CANCELLED` (the cancel request stands even though the holder never acted on it). A request
  that then fails with 409 still commits that ending (`nmdc_runtime.services.transactions`).
- **What a lapse does to the job**: an expiry counts the attempt (`unclaimed`, or `failed` once attempts are
  used up). A lapsed cancel request is a `CANCELLED` ending: the attempt is given back, and the job returns
  to `unclaimed` when only the operation was canceled, or stays `canceled` when an admin canceled the job.
- **Claimable** (`claimable`): a job a site may claim now: unclaimed, or claimed under a lapsed lease whose
  ending gives the job back (attempts left, or a cancel request), of a workflow whose required capabilities
  the site has.
- **An admin's cancel** ends the operation at once (as `canceled`) when its `lease_expire_time` has passed,
  paused or not: nobody is heartbeating it. Otherwise it sets `cancel_requested` for the holder to act on, and
  cuts the lease to end within `cancel_grace_seconds` at the latest: from then on heartbeats (and a resume)
  no longer renew it, so the holder has the grace to finish (a result posted within it counts), and the
  lapse then ends it `canceled` (see Lapse) whether or not the holder keeps heartbeating. A claim with a
  cancel request gets no access grant (`domain.grants`).
- **Drained sites** (`domain.drains`): a site whose last claims each failed at the site claims nothing new
  until the drain is lifted; the claim decision refuses it (Conflict: `SiteDrained`) and `claimable` lists
  nothing for it.
- **Finishing with a result** needs a *succeeded* execution recorded under this very operation (so of the same
  job, by the holding site); anything else is invalid input (422 on the field `result.execution_id`): a failed
  run is reported as an error. The PATCH that finishes an operation does not renew its lease.
- **`done: true` alone** (neither result nor error: what NMDC's own site software sends) finishes with the
  latest execution recorded under the operation: its result when it succeeded, error `EXECUTION_FAILED`
  naming it when it failed; with none recorded, 422 saying what to send (`outcome_of_latest`).
- **Lease length**: a claim's lease lasts its workflow's `lease_seconds` (at most `max_lease_seconds`), or
  `claim_lease_seconds` when the workflow sets none; a claim may ask for a shorter one, never a longer one
  (422). The operation keeps its length (`lease_seconds`): every heartbeat by the holder, and a resume, renew
  the lease by that much (`renew_lease`), until a cancel is requested.
- **Metadata**: the keys `job_id`, `site_id`, `workflow_id`, `attempt` are read-only (422 when changed); the
  server-owned keys `state`, `lease_expire_time`, `lease_seconds`, `cancel_requested`, `paused` are ignored
  when sent back;
  other keys are merged shallowly, and a `null` value removes a key. `progress` must be a number in
  [0, 100] and `message` a string. The merged site-supplied keys are capped (`nmdc_runtime.domain.caps`):
  at most `MAX_METADATA_KEYS` (100) keys and `Policy.max_metadata_bytes` (`NMDC_MAX_METADATA_BYTES`, 64 KiB
  by default) as compact UTF-8 JSON, else 422
  on the field `metadata`. A PATCH that leaves the metadata no bigger than it was (in keys and bytes) is
  always accepted, so an operation stored over a cap can still heartbeat and shrink.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from nmdc_runtime.domain import drains as drains_rules
from nmdc_runtime.domain.caps import check_cap
from nmdc_runtime.domain.errors import Conflict, Forbidden, InvalidInput
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.domain.states import ErrorCode, ExecutionStatus, JobStatus, OperationState, ReleaseCode


class Job(Protocol):
    """What the rules read and change of a job (the ORM row, in the service layer)."""

    id: str
    workflow_id: str
    status: str
    attempts: int
    max_attempts: int
    updated_at: datetime


class Operation(Protocol):
    """What the rules read and change of an operation (the ORM row, in the service layer)."""

    id: str
    job_id: str
    site_id: str
    workflow_id: str
    attempt: int
    state: str
    done: bool
    cancel_requested: bool
    lease_expire_time: datetime
    lease_seconds: int
    result_execution_id: str | None
    error: dict[str, Any] | None
    extra_metadata: dict[str, Any]
    update_time: datetime
    expire_time: datetime | None
    execution_count: int


class Execution(Protocol):
    """What the rules read of an execution."""

    id: str
    job_id: str
    site_id: str
    operation_id: str
    status: str


READ_ONLY_METADATA = ("job_id", "site_id", "workflow_id", "attempt")
"""Metadata keys a PATCH may send back unchanged but never change."""
SERVER_METADATA = ("state", "lease_expire_time", "lease_seconds", "cancel_requested", "paused")
"""Metadata keys the server owns; values sent in a PATCH are ignored."""
MAX_METADATA_KEYS = 100
"""At most this many site-supplied metadata keys once a PATCH is merged."""

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


def move_operation(op: Operation, target: OperationState) -> None:
    """Change an operation's state; Conflict when the move is not allowed."""
    if not can_move_operation(OperationState(op.state), target):
        raise Conflict(f"operation {op.id} is {op.state}; it cannot become {target}")
    op.state = target.value
    op.done = target.done


def move_job(job: Job, target: JobStatus) -> None:
    """Change a job's status (staying put is fine); Conflict when the move is not allowed."""
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
    return (
        not op.done
        and (op.state != OperationState.PAUSED or bool(op.cancel_requested))
        and op.lease_expire_time <= now
    )


def capabilities_cover(site_capabilities: list[str], required: list[str]) -> bool:
    """Whether a site has every capability a workflow requires."""
    return set(required) <= set(site_capabilities)


def claimable(
    job: Job,
    open_operation: Operation | None,
    *,
    site_capabilities: list[str],
    required_capabilities: list[str],
    site_drained: bool,
    now: datetime,
) -> bool:
    """Whether a claim by a site with `site_capabilities` would get a new operation now (see the module
    docstring): what `GET /jobs?claimable=true` lists, before anything has ended a lapsed lease. Nothing is
    claimable by a drained site (`site_drained`)."""
    if site_drained or not capabilities_cover(site_capabilities, required_capabilities):
        return False
    if job.status == JobStatus.UNCLAIMED:
        return True
    return (
        job.status == JobStatus.CLAIMED
        and open_operation is not None
        and lease_lapsed(open_operation, now=now)
        # An expiry on the last attempt fails the job; a lapsed cancel request gives the attempt back.
        and (job.attempts < job.max_attempts or bool(open_operation.cancel_requested))
    )


def decide_claim(
    *,
    job_status: JobStatus,
    holder_site_id: str | None,
    site_id: str,
    site_capabilities: list[str],
    required_capabilities: list[str],
    site_drain: drains_rules.Drain | None,
) -> ClaimDecision:
    """What a claim by `site_id` gets, given the job's status, who holds its (unlapsed) open operation and the
    site's drain (None: not drained).

    Forbidden when the site lacks a required capability; Conflict when the job is finished or canceled,
    SiteDrained (a Conflict) when the site is drained and does not hold the claim already (its open operations
    go on: a retried claim of one is answered as usual), Conflict when another site holds the claim.
    """
    if not capabilities_cover(site_capabilities, required_capabilities):
        missing = sorted(set(required_capabilities) - set(site_capabilities))
        raise Forbidden(f"site {site_id} lacks required capabilities: {', '.join(missing)}")
    if JobStatus(job_status).terminal:
        raise Conflict(f"the job is {job_status}")
    if holder_site_id == site_id:
        return ClaimDecision.EXISTING
    drains_rules.check_not_drained(site_id, site_drain)
    if holder_site_id is not None:
        raise Conflict("another site holds an active claim on this job")
    return ClaimDecision.CREATED


def claim(
    job: Job,
    *,
    holder_site_id: str | None,
    site_id: str,
    site_capabilities: list[str],
    required_capabilities: list[str],
    fault_streak: Sequence[tuple[str, datetime]],
    drain_after: int,
    workflow_lease_seconds: int | None,
    requested_lease_seconds: int | None,
    default_lease_seconds: int,
    now: datetime,
) -> dict[str, Any] | None:
    """The one decision of a claim, whichever path writes it: None when `site_id` already holds the job's
    (unlapsed) open operation, else the fields of its new operation (`start_operation`: the job is marked
    claimed and the attempt counted). `fault_streak` is the site's faults since its last success or undrain
    (its first `drain_after` at least), which may drain it (`drains_rules.drain_of`). Forbidden, Conflict
    (SiteDrained included) and InvalidInput as `decide_claim` and `lease_for_claim` say."""
    decision = decide_claim(
        job_status=JobStatus(job.status),
        holder_site_id=holder_site_id,
        site_id=site_id,
        site_capabilities=site_capabilities,
        required_capabilities=required_capabilities,
        site_drain=drains_rules.drain_of(fault_streak, drain_after=drain_after),
    )
    if decision is ClaimDecision.EXISTING:
        return None
    lease = lease_for_claim(
        requested=requested_lease_seconds,
        workflow_lease_seconds=workflow_lease_seconds,
        default_seconds=default_lease_seconds,
    )
    return start_operation(job, site_id=site_id, now=now, lease_seconds=lease)


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


def merged_metadata(op: Operation, patch: Mapping[str, Any], *, max_bytes: int) -> dict[str, Any]:
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
    check_cap("metadata", op.extra_metadata or {}, merged, max_keys=MAX_METADATA_KEYS, max_bytes=max_bytes)
    return merged


def lease_for_claim(
    *, requested: int | None, workflow_lease_seconds: int | None, default_seconds: int
) -> int:
    """The lease length of a new claim: the workflow's (or the default), or a shorter one the claim asks for.

    InvalidInput when the claim asks for more than the workflow allows.
    """
    allowed = workflow_lease_seconds or default_seconds
    if requested is None:
        return allowed
    if requested > allowed:
        raise InvalidInput(
            f"lease_seconds may be at most {allowed}, the lease this workflow's claims get",
            field="lease_seconds",
            location="body",
        )
    return requested


def check_workflow_lease(lease_seconds: int | None, *, max_seconds: int) -> None:
    """InvalidInput when a workflow asks for a lease longer than the server allows."""
    if lease_seconds is not None and lease_seconds > max_seconds:
        raise InvalidInput(
            f"lease_seconds may be at most {max_seconds} (NMDC_MAX_LEASE_SECONDS)",
            field="lease_seconds",
            location="body",
        )


def start_operation(job: Job, *, site_id: str, now: datetime, lease_seconds: int) -> dict[str, Any]:
    """The fields of a new open operation for `site_id` on `job`; counts the attempt and marks the job claimed."""
    move_job(job, JobStatus.CLAIMED)
    job.attempts += 1
    job.updated_at = now
    return {
        "job_id": job.id,
        "site_id": site_id,
        "workflow_id": job.workflow_id,
        "attempt": job.attempts,
        "state": OperationState.RUNNING.value,
        "done": False,
        "extra_metadata": {},
        "cancel_requested": False,
        "lease_expire_time": now + timedelta(seconds=lease_seconds),
        "lease_seconds": lease_seconds,
        "create_time": now,
        "update_time": now,
    }


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
    move_operation(op, state)
    op.result_execution_id = execution_id
    op.error = error
    op.update_time = now
    op.expire_time = now + timedelta(seconds=retention_seconds)
    status, attempts = job_after_operation(
        job_status=JobStatus(job.status), attempts=job.attempts, max_attempts=job.max_attempts, op_state=state
    )
    move_job(job, status)
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
    end_canceled(
        op,
        job,
        now=now,
        retention_seconds=retention_seconds,
        message="cancellation was requested and the holder's lease lapsed after the cancel request",
        lease_expire_time=_rfc3339(op.lease_expire_time),
    )


def end_canceled(
    op: Operation, job: Job, *, now: datetime, retention_seconds: int, message: str, **details: Any
) -> None:
    """End `op` as `canceled` with error CANCELLED (`message`, `details`): the attempt is given back."""
    finish_operation(
        op,
        job,
        state=OperationState.CANCELED,
        now=now,
        retention_seconds=retention_seconds,
        error=cancelled_error(message, **details),
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


# --- what each request does, once its rows are locked --------------------------------------------------


def finishing_state(
    *, done: bool | None, execution_id: str | None, error: Mapping[str, Any] | None
) -> OperationState | None:
    """The state a PATCH finishes its operation in, or None when it does not finish it.

    InvalidInput for `done: false` with an outcome, and for finishing with neither or both of result and error.
    """
    finishing = done is True or execution_id is not None or error is not None
    if done is False and finishing:
        raise InvalidInput(
            "a result or an error finishes the operation: send done true", field="done", location="body"
        )
    if not finishing:
        return None
    if (execution_id is None) == (error is None):
        raise InvalidInput("finishing needs exactly one of result and error", field="done", location="body")
    return OperationState.SUCCEEDED if execution_id is not None else state_for_error(error["code"])


def outcome_of_latest(op: Operation, latest: Execution | None) -> tuple[str | None, dict[str, Any] | None]:
    """What `done: true` alone finishes `op` with: (the execution id, None) when the latest execution recorded
    under it succeeded; (None, an `EXECUTION_FAILED` error naming it) when it failed. InvalidInput when none
    was recorded: the PATCH must say how the operation ended."""
    if latest is None:
        raise InvalidInput(
            f"done: true alone finishes operation {op.id} with the latest execution recorded under it, and there "
            "is none: post the execution first (POST /jobs/{job_id}/executions), or send result "
            '{"execution_id"} or error {"code", "message"}',
            field="done",
            location="body",
        )
    if latest.status == ExecutionStatus.SUCCEEDED:
        return latest.id, None
    return None, {
        "code": ErrorCode.EXECUTION_FAILED.value,
        "message": f"execution {latest.id}, the latest recorded under this operation, failed",
        "details": {"execution_id": latest.id},
    }


def check_result(op: Operation, execution_id: str, execution: Execution | None) -> None:
    """InvalidInput unless `execution` (looked up by `execution_id`) is a succeeded execution of the
    operation's job by its site."""
    if execution is None or execution.job_id != op.job_id or execution.site_id != op.site_id:
        raise InvalidInput(
            f"no execution {execution_id!r} of job {op.job_id} by site {op.site_id}",
            field="result.execution_id",
            location="body",
        )
    if execution.operation_id != op.id:
        raise InvalidInput(
            f"execution {execution_id} was recorded under operation {execution.operation_id}, not {op.id}",
            field="result.execution_id",
            location="body",
        )
    if execution.status != ExecutionStatus.SUCCEEDED:
        raise InvalidInput(
            f"execution {execution_id} failed: finish the operation with an error instead",
            field="result.execution_id",
            location="body",
        )


def heartbeat(op: Operation, *, now: datetime, by_holder: bool) -> None:
    """Record a PATCH: `update_time`, and, when the holding site sent it, a lease renewed by its own length
    (`renew_lease`: not after a cancel request)."""
    op.update_time = now
    if by_holder:
        renew_lease(op, now=now)


def renew_lease(op: Operation, *, now: datetime) -> None:
    """Give the operation a lease of its own length from `now`, unless a cancel was requested: its lease then
    ends when the cancel's grace does (`request_cancel`), whatever the holder sends."""
    if not op.cancel_requested:
        op.lease_expire_time = now + timedelta(seconds=op.lease_seconds)


def release(
    op: Operation,
    job: Job,
    *,
    now: datetime,
    retention_seconds: int,
    reason: Mapping[str, str] | None = None,
) -> None:
    """The holding site gives the job back: `canceled` (CANCELLED), the attempt given back, whatever the reason.

    `reason` (`{"code", "message"}`, a `ReleaseCode`) is kept as the error's `details.reason`; without one the
    details stay empty, as a graceful give-back's always were.
    """
    if reason is None:
        end_canceled(
            op, job, now=now, retention_seconds=retention_seconds, message="released by the holding site"
        )
        return
    code = ReleaseCode(reason["code"])
    end_canceled(
        op,
        job,
        now=now,
        retention_seconds=retention_seconds,
        message=f"released by the holding site ({code.value})",
        reason={"code": code.value, "message": reason.get("message", "")},
    )


def request_cancel(
    op: Operation, job: Job, *, now: datetime, retention_seconds: int, grace_seconds: int, reason: str
) -> None:
    """Set `cancel_requested` for the holder to act on, its lease cut to end within `grace_seconds` (and
    renewed no more); end the operation at once when its lease has lapsed."""
    op.cancel_requested = True
    op.update_time = now
    if lease_lapsed(op, now=now):  # with cancel_requested set: paused or not
        # Nobody is heartbeating it, so nobody would act on the request.
        end_canceled(
            op,
            job,
            now=now,
            retention_seconds=retention_seconds,
            message=reason + "; the holder's lease had lapsed",
        )
        return
    # Never later than it was: a second request does not move the end of the first's grace.
    op.lease_expire_time = min(op.lease_expire_time, now + timedelta(seconds=grace_seconds))


def cancel_job(
    job: Job, op: Operation | None, *, now: datetime, retention_seconds: int, grace_seconds: int
) -> None:
    """An admin cancels the job for good; its active operation (if any) gets a cancel request
    (`request_cancel`, with `grace_seconds`).

    Canceling a canceled job changes nothing; a succeeded or failed job is a Conflict.
    """
    if job.status == JobStatus.CANCELED:
        return
    move_job(job, JobStatus.CANCELED)
    job.updated_at = now
    if op is not None:
        request_cancel(
            op,
            job,
            now=now,
            retention_seconds=retention_seconds,
            grace_seconds=grace_seconds,
            reason="the job was canceled by an admin",
        )


def pause(op: Operation, *, now: datetime) -> None:
    """An admin pauses an open operation: its lease stops lapsing. Pausing a paused one changes nothing."""
    if op.state != OperationState.PAUSED:
        move_operation(op, OperationState.PAUSED)
        op.update_time = now


def resume(op: Operation, *, now: datetime) -> None:
    """An admin resumes a paused operation, with a fresh lease of its length (`renew_lease`: not after a
    cancel request). Resuming a running one changes nothing."""
    if op.state == OperationState.PAUSED:
        move_operation(op, OperationState.RUNNING)
        renew_lease(op, now=now)
        op.update_time = now


def lost_lease_message(op: Operation) -> str:
    """Why a late write is refused: the operation's lease lapsed (it has just been ended) or it had ended."""
    return f"operation {op.id} lost its lease: it lapsed at {_rfc3339(op.lease_expire_time)} ({op.state})"
