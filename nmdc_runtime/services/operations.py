"""Operations: heartbeats and endings by the holding site, cancels, and an admin's pause and resume."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.errors import Conflict, RuntimeDomainError
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.models import Execution, Operation
from nmdc_runtime.services.transactions import (
    locked_operation,
    require_active,
    statements_commit,
    transaction,
)
from nmdc_runtime.store import executions as executions_store
from nmdc_runtime.store import operations as operations_store


class Patched(NamedTuple):
    """What a PATCH gives back: the operation, and the execution it finished with (for the answer)."""

    operation: Operation
    result: Execution | None


def patch_operation(
    session: Session,
    *,
    op_id: str,
    principal: Principal,
    policy: Policy,
    metadata: Mapping[str, Any] | None = None,
    done: bool | None = None,
    execution_id: str | None = None,
    error: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Patched:
    """A PATCH from the holding site (renewing its lease) or an admin: merge metadata, maybe finish.

    `done: true` alone finishes with the latest execution recorded under the operation
    (`operations_rules.outcome_of_latest`).

    Twin paths, one decision (`_apply_patch`): the holding site's PATCH of its open operation (the common
    case) is decided on one read and written by one statement that applies it only if nothing changed in
    between (`_patch_as_holder`, the fast path); everything else, `done: true` alone and every refusal, takes
    the general path below on the locked rows (docs/architecture.md, "Following a claim").
    """
    now = now or datetime.now(UTC)
    request = _PatchRequest(metadata=metadata, done=done, execution_id=execution_id, error=error)
    if principal.is_site:
        patched = _patch_as_holder(
            session, op_id=op_id, site_id=principal.site_id, policy=policy, request=request, now=now
        )
        if patched is not None:
            return patched
    # The general path (twin of `_patch_as_holder`).
    with transaction(session):
        op, job = locked_operation(session, op_id=op_id)
        # Who may touch it comes before whether it is still open: another site learns nothing of its state.
        operations_rules.authorize_holder(op, principal, admin_allowed=True)
        require_active(session, op, job, now=now, policy=policy)
        if request.finishes_with_latest:
            found = executions_store.latest_of_operation(session, operation_id=op.id)
        elif execution_id is not None:
            found = executions_store.executions_by_id(session, execution_ids=[execution_id]).get(execution_id)
        else:
            found = None
        _apply_patch(op, job, found, request, by_holder=principal.is_site, policy=policy, now=now)
        return Patched(op, found if op.result_execution_id is not None else None)


class _PatchRequest(NamedTuple):
    """What a PATCH asks for, from its body."""

    metadata: Mapping[str, Any] | None
    done: bool | None
    execution_id: str | None
    error: Mapping[str, Any] | None

    @property
    def finishes_with_latest(self) -> bool:
        """`done: true` with neither a result nor an error: the latest execution under the operation decides."""
        return self.done is True and self.execution_id is None and self.error is None


def _apply_patch(
    op: operations_rules.Operation,
    job: operations_rules.Job,
    execution: operations_rules.Execution | None,
    request: _PatchRequest,
    *,
    by_holder: bool,
    policy: Policy,
    now: datetime,
) -> None:
    """The PATCH's rules on an open operation that holds its lease, its job, and the execution its result
    names, or for `done: true` alone the latest one under the operation (None: none named, or no such
    execution): InvalidInput for a bad finish, metadata or result."""
    if request.finishes_with_latest:
        execution_id, error = operations_rules.outcome_of_latest(op, execution)
        request = request._replace(execution_id=execution_id, error=error)
    state = operations_rules.finishing_state(
        done=request.done, execution_id=request.execution_id, error=request.error
    )
    if request.metadata is not None:
        op.extra_metadata = operations_rules.merged_metadata(
            op, request.metadata, max_bytes=policy.max_metadata_bytes
        )
    if request.execution_id is not None:
        operations_rules.check_result(op, request.execution_id, execution)
    operations_rules.heartbeat(op, now=now, by_holder=by_holder and state is None)
    if state is not None:
        operations_rules.finish_operation(
            op,
            job,
            state=state,
            now=now,
            retention_seconds=policy.operation_retention_seconds,
            execution_id=request.execution_id,
            error=dict(request.error) if request.error is not None else None,
        )


def _patch_as_holder(
    session: Session, *, op_id: str, site_id: str, policy: Policy, request: _PatchRequest, now: datetime
) -> Patched | None:
    """The fast path of `patch_operation` (its twin is the general path there): the holding site's PATCH of
    its open operation whose lease holds, decided by `_apply_patch` on the rows as one statement read them and
    written by a second that applies it only if neither the operation nor its job changed
    (`operations_store.patch_as_seen`). None, and nothing written, for anything else (another site, a finished
    or lapsed operation, a refusal, a change in between, `done: true` alone, which reads the latest execution):
    the general path decides those on the locked rows, and says why.
    """
    if request.finishes_with_latest:
        return None
    with statements_commit(session):
        seen = operations_store.operation_job_and_execution(
            session, op_id=op_id, execution_id=request.execution_id
        )
        if seen is None:
            return None
        op, job, execution = seen
        if op.done or op.site_id != site_id or operations_rules.lease_lapsed(op, now=now):
            return None
        seen_versions = operations_store.versions(op, job)
        try:
            _apply_patch(op, job, execution, request, by_holder=True, policy=policy, now=now)
        except RuntimeDomainError:
            return None
        written = operations_store.patch_as_seen(session, operation=op, job=job, seen=seen_versions)
    return None if written is None else Patched(written, execution if written.result_execution_id else None)


def cancel_operation(
    session: Session, *, op_id: str, principal: Principal, policy: Policy, now: datetime | None = None
) -> Operation:
    """`:cancel`. The holding site releases the job; an admin requests cancellation (or, when nobody holds the
    lease any more, ends the operation at once)."""
    now = now or datetime.now(UTC)
    with transaction(session):
        op, job = locked_operation(session, op_id=op_id)
        operations_rules.authorize_holder(op, principal, admin_allowed=True)
        if principal.is_site:
            require_active(session, op, job, now=now, policy=policy)
            operations_rules.release(op, job, now=now, retention_seconds=policy.operation_retention_seconds)
            return op
        # An admin's request comes before the lapse rule: it ends a lapsed operation canceled, not expired.
        if op.done:
            raise Conflict(f"operation {op.id} is finished ({op.state})")
        operations_rules.request_cancel(
            op,
            job,
            now=now,
            retention_seconds=policy.operation_retention_seconds,
            grace_seconds=policy.cancel_grace_seconds,
            reason="canceled by an admin",
        )
        return op


def pause_operation(
    session: Session, *, op_id: str, policy: Policy, now: datetime | None = None
) -> Operation:
    """`:pause` (admin): the lease stops lapsing until `:resume`. Pausing a paused operation changes nothing."""
    return _on_active(session, op_id, policy, now, operations_rules.pause)


def resume_operation(
    session: Session, *, op_id: str, policy: Policy, now: datetime | None = None
) -> Operation:
    """`:resume` (admin): running again with a fresh lease period. Resuming a running one changes nothing."""
    return _on_active(session, op_id, policy, now, operations_rules.resume)


def _on_active(session: Session, op_id: str, policy: Policy, now: datetime | None, move) -> Operation:
    """Apply `move(op, now=...)` to an operation that is open and holds its lease (else Conflict)."""
    now = now or datetime.now(UTC)
    with transaction(session):
        op, job = locked_operation(session, op_id=op_id)
        require_active(session, op, job, now=now, policy=policy)
        move(op, now=now)
        return op
