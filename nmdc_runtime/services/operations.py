"""Operations: heartbeats and endings by the holding site, cancels, and an admin's pause and resume."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from nmdc_runtime.domain import operations as rules
from nmdc_runtime.domain.errors import Conflict
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.models import Operation
from nmdc_runtime.services.transactions import locked_operation, require_active, transaction
from nmdc_runtime.store import executions as executions_store


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
) -> Operation:
    """A PATCH from the holding site (renewing its lease) or an admin: merge metadata, maybe finish."""
    now = now or datetime.now(UTC)
    with transaction(session):
        op, job = locked_operation(session, op_id=op_id)
        # Who may touch it comes before whether it is still open: another site learns nothing of its state.
        rules.authorize_holder(op, principal, admin_allowed=True)
        require_active(session, op, job, now=now, policy=policy)
        state = rules.finishing_state(done=done, execution_id=execution_id, error=error)
        extra = rules.merged_metadata(op, metadata) if metadata is not None else op.extra_metadata
        if execution_id is not None:
            found = executions_store.executions_by_id(session, execution_ids=[execution_id])
            rules.check_result(op, execution_id, found.get(execution_id))
        op.extra_metadata = extra
        rules.heartbeat(op, now=now, by_holder=principal.is_site and state is None)
        if state is not None:
            rules.finish_operation(
                op,
                job,
                state=state,
                now=now,
                retention_seconds=policy.operation_retention_seconds,
                execution_id=execution_id,
                error=dict(error) if error is not None else None,
            )
        return op


def cancel_operation(
    session: Session, *, op_id: str, principal: Principal, policy: Policy, now: datetime | None = None
) -> Operation:
    """`:cancel`. The holding site releases the job; an admin requests cancellation (or, when nobody holds the
    lease any more, ends the operation at once)."""
    now = now or datetime.now(UTC)
    with transaction(session):
        op, job = locked_operation(session, op_id=op_id)
        rules.authorize_holder(op, principal, admin_allowed=True)
        if principal.is_site:
            require_active(session, op, job, now=now, policy=policy)
            rules.release(op, job, now=now, retention_seconds=policy.operation_retention_seconds)
            return op
        # An admin's request comes before the lapse rule: it ends a lapsed operation canceled, not expired.
        if op.done:
            raise Conflict(f"operation {op.id} is finished ({op.state})")
        rules.request_cancel(
            op,
            job,
            now=now,
            retention_seconds=policy.operation_retention_seconds,
            reason="canceled by an admin",
        )
        return op


def pause_operation(
    session: Session, *, op_id: str, policy: Policy, now: datetime | None = None
) -> Operation:
    """`:pause` (admin): the lease stops lapsing until `:resume`. Pausing a paused operation changes nothing."""
    return _on_active(session, op_id, policy, now, rules.pause)


def resume_operation(
    session: Session, *, op_id: str, policy: Policy, now: datetime | None = None
) -> Operation:
    """`:resume` (admin): running again with a fresh lease period. Resuming a running one changes nothing."""
    return _on_active(session, op_id, policy, now, rules.resume)


def _on_active(session: Session, op_id: str, policy: Policy, now: datetime | None, move) -> Operation:
    """Apply `move(op, now=...)` to an operation that is open and holds its lease (else Conflict)."""
    now = now or datetime.now(UTC)
    with transaction(session):
        op, job = locked_operation(session, op_id=op_id)
        require_active(session, op, job, now=now, policy=policy)
        move(op, now=now)
        return op
