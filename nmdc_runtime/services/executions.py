"""Executions: recorded, and corrected, by the site holding the job's active claim (rules in
`nmdc_runtime.domain.executions`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from nmdc_runtime.domain import executions as executions_rules
from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.errors import RuntimeDomainError
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.models import DataResource, Execution
from nmdc_runtime.services.transactions import Once, locked_job, run_once, statements_commit, transaction
from nmdc_runtime.store import executions as executions_store
from nmdc_runtime.store import idempotency as idempotency_store
from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store.idempotency import IdempotentRequest


class Recorded(NamedTuple):
    """An execution and its outputs' data resources."""

    execution: Execution
    outputs: list[DataResource]


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
    now: datetime | None = None,
) -> Once[Recorded]:
    """Record what `site_id` did under its active claim on the job; its outputs become its data resources.

    At most once per `request` key (see `store.idempotency`): a repeat gets the execution the first request
    recorded, as it was then. NotFound (unknown job), Forbidden (another site's claim), Conflict (no active claim),
    InvalidInput (an operation that is not this job's, see `executions_rules.operation_for_execution`; details
    over a cap, see `executions_rules.check_details`).

    Twin paths, one decision (`executions_rules.operation_for_execution`): the common case, the holder
    recording under its open operation, is decided on one read and written by one statement that applies it
    only if neither the job nor the operation changed (`_record_as_holder`, the fast path); anything else,
    and every refusal or repeat, takes the general path below on the locked rows (docs/architecture.md,
    "Following a claim").
    """
    now = now or datetime.now(UTC)
    executions_rules.check_details(details, max_bytes=policy.max_metadata_bytes)
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
    recorded = _record_as_holder(
        session,
        job_id=job_id,
        fields=fields,
        request=request,
        max_executions=policy.max_executions_per_operation,
    )
    if recorded is not None:
        return Once(recorded, replayed=False)

    # The general path (twin of `_record_as_holder`).
    def create() -> Recorded:
        job, active = locked_job(session, job_id=job_id, now=now, policy=policy)
        named = (
            active
            if active is not None and active.id == operation_id
            else operations_store.find_operation(session, op_id=operation_id)
        )
        op = executions_rules.operation_for_execution(
            job_id=job.id, operation_id=operation_id, site_id=site_id, active=active, named=named
        )
        executions_rules.check_room_for_execution(op, max_executions=policy.max_executions_per_operation)
        recorded = Recorded(
            *executions_store.create_execution(
                session,
                job_id=job.id,
                workflow_id=job.workflow_id,
                group=job.group,
                **{**fields, "operation_id": op.id},
            )
        )
        op.execution_count += 1
        return recorded

    with transaction(session):
        return run_once(session, request=request, create=create, document=_document, restore=_restore)


def _document(recorded: Recorded) -> dict[str, Any]:
    """What an Idempotency-Key remembers of an execution: it and its outputs, as they were."""
    return {
        "execution": idempotency_store.row_document(recorded.execution),
        "outputs": [idempotency_store.row_document(output) for output in recorded.outputs],
    }


def _restore(document: dict[str, Any]) -> Recorded:
    return Recorded(
        idempotency_store.row_from_document(Execution, document["execution"]),
        [idempotency_store.row_from_document(DataResource, output) for output in document["outputs"]],
    )


def _record_as_holder(
    session: Session,
    *,
    job_id: str,
    fields: dict[str, Any],
    request: IdempotentRequest,
    max_executions: int,
) -> Recorded | None:
    """The fast path of `record_execution` (its twin is the general path there): the execution of the site
    holding the job's open operation, whose lease holds, named by `operation_id`, with room for another
    execution: decided by `executions_rules.operation_for_execution` and `has_room_for_execution` on the rows as
    one statement read them, and written by a second that applies it only if neither the job nor the operation
    changed and the operation still has room, together with the request's Idempotency-Key row
    (`executions_store.record_as_seen`). None, and nothing written, for anything else: the
    general path decides those on the locked rows (and replays a repeated key).
    """
    now = fields["now"]
    with statements_commit(session):
        seen = operations_store.job_and_operations(session, job_id=job_id, op_id=fields["operation_id"])
        if seen is None or seen.open is None or operations_rules.lease_lapsed(seen.open, now=now):
            return None
        try:
            op = executions_rules.operation_for_execution(
                job_id=seen.job.id,
                operation_id=fields["operation_id"],
                site_id=fields["site_id"],
                active=seen.open,
                named=seen.named,
            )
        except RuntimeDomainError:
            return None
        if not executions_rules.has_room_for_execution(op, max_executions=max_executions):
            return None
        execution, resources = executions_store.new_execution(
            job_id=seen.job.id,
            workflow_id=seen.job.workflow_id,
            group=seen.job.group,
            **{**fields, "operation_id": op.id},
        )
        written = executions_store.record_as_seen(
            session,
            execution=execution,
            outputs=resources,
            operation=op,
            job=seen.job,
            seen=operations_store.versions(op, seen.job),
            request=request,
            created=_document(Recorded(execution, resources)),
            max_executions=max_executions,
        )
    return Recorded(execution, resources) if written else None


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
    """Correct an execution: only its site, only while its operation is open (`executions_rules.check_correction`).

    `details` is merged shallowly; a null value removes a key; the merge is capped (`executions_rules.merged_details`).
    """
    now = now or datetime.now(UTC)
    with transaction(session):
        job, active = locked_job(session, job_id=job_id, now=now, policy=policy)
        execution = executions_store.get_execution(
            session, job_id=job.id, execution_id=execution_id, lock=True
        )
        executions_rules.check_correction(
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
            execution.details = executions_rules.merged_details(
                execution.details or {}, details, max_bytes=policy.max_metadata_bytes
            )
        execution.updated_at = now
        return execution
