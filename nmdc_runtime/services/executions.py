"""Executions: recorded, and corrected, by the site holding the job's active claim (rules in
`nmdc_runtime.domain.executions`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from nmdc_runtime.domain import executions as rules
from nmdc_runtime.domain import operations as operation_rules
from nmdc_runtime.domain.errors import RuntimeDomainError
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.models import DataResource, Execution
from nmdc_runtime.services.transactions import locked_job, statements_commit, transaction
from nmdc_runtime.store import executions as store
from nmdc_runtime.store import idempotency
from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store.idempotency import IdempotentRequest, Outcome


def record_execution(
    session: Session,
    *,
    job_id: str,
    site_id: str,
    operation_id: str,
    status: str,
    started_at: datetime,
    ended_at: datetime,
    outputs: list[dict[str, Any]],
    details: dict[str, Any],
    policy: Policy,
    request: IdempotentRequest,
    present: Callable[[Execution, list[DataResource]], Any],
    now: datetime | None = None,
) -> Outcome:
    """Record what `site_id` did under its active claim on the job; its outputs become its data resources.

    At most once per `request` key (see `store.idempotency`); `present` shapes the answer (from the execution
    and its outputs) that is stored and replayed. NotFound (unknown job), Forbidden (another site's claim),
    Conflict (no active claim), InvalidInput (an operation that is not this job's, see
    `rules.operation_for_execution`; details over a cap, see `rules.check_details`).

    The common case, the holder recording under its open operation, is decided on one read and written by one
    statement that applies it only if neither the job nor the operation changed (`_record_as_holder`); anything
    else, and every refusal or repeat, takes the general path on the locked rows.
    """
    now = now or datetime.now(UTC)
    rules.check_details(details)
    fields = {
        "site_id": site_id,
        "operation_id": operation_id,
        "status": status,
        "started_at": started_at,
        "ended_at": ended_at,
        "outputs": outputs,
        "details": details,
        "now": now,
    }
    recorded = _record_as_holder(session, job_id=job_id, fields=fields, request=request, present=present)
    if recorded is not None:
        return recorded

    def create() -> Any:
        job, active = locked_job(session, job_id=job_id, now=now, policy=policy)
        named = (
            active
            if active is not None and active.id == operation_id
            else operations_store.find_operation(session, op_id=operation_id)
        )
        op = rules.operation_for_execution(
            job_id=job.id, operation_id=operation_id, site_id=site_id, active=active, named=named
        )
        row, resources = store.create_execution(
            session, job_id=job.id, workflow_id=job.workflow_id, **{**fields, "operation_id": op.id}
        )
        return present(row, resources)

    with transaction(session):
        return idempotency.run_once(session, request=request, status_code=201, create=create)


def _record_as_holder(
    session: Session,
    *,
    job_id: str,
    fields: dict[str, Any],
    request: IdempotentRequest,
    present: Callable[[Execution, list[DataResource]], Any],
) -> Outcome | None:
    """The execution of the site holding the job's open operation, whose lease holds, named by
    `operation_id`: decided by `rules.operation_for_execution` on the rows as one statement read them, and
    written by a second that applies it only if neither the job nor the operation changed, together with the
    request's Idempotency-Key row (`store.record_as_seen`). None, and nothing written, for anything else: the
    general path decides those on the locked rows (and replays a repeated key).
    """
    now = fields["now"]
    with statements_commit(session):
        seen = operations_store.job_and_operations(session, job_id=job_id, op_id=fields["operation_id"])
        if seen is None or seen.open is None or operation_rules.lease_lapsed(seen.open, now=now):
            return None
        try:
            op = rules.operation_for_execution(
                job_id=seen.job.id,
                operation_id=fields["operation_id"],
                site_id=fields["site_id"],
                active=seen.open,
                named=seen.named,
            )
        except RuntimeDomainError:
            return None
        execution, resources = store.new_execution(
            job_id=seen.job.id, workflow_id=seen.job.workflow_id, **{**fields, "operation_id": op.id}
        )
        answer = Outcome(status_code=201, body=present(execution, resources))
        written = store.record_as_seen(
            session,
            execution=execution,
            outputs=resources,
            operation=op,
            job=seen.job,
            seen=operations_store.versions(op, seen.job),
            request=request,
            answer=answer,
        )
    return answer if written else None


def update_execution(
    session: Session,
    *,
    job_id: str,
    execution_id: str,
    site_id: str,
    policy: Policy,
    status: str | None = None,
    ended_at: datetime | None = None,
    details: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Execution:
    """Correct an execution: only its site, only while its operation is open (`rules.check_correction`).

    `details` is merged shallowly; a null value removes a key; the merge is capped (`rules.merged_details`).
    """
    now = now or datetime.now(UTC)
    with transaction(session):
        job, active = locked_job(session, job_id=job_id, now=now, policy=policy)
        execution = store.get_execution(session, job_id=job.id, execution_id=execution_id, lock=True)
        rules.check_correction(
            execution_id=execution.id,
            execution_site_id=execution.site_id,
            execution_operation_id=execution.operation_id,
            started_at=execution.started_at,
            site_id=site_id,
            active=active,
            ended_at=ended_at,
        )
        if status is not None:
            execution.status = status
        if ended_at is not None:
            execution.ended_at = ended_at
        if details is not None:
            execution.details = rules.merged_details(execution.details or {}, details)
        execution.updated_at = now
        return execution
