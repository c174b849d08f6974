"""Executions: recorded, and corrected, only by the site that holds the job's active claim.

An execution may change only while the operation it was reported under is still open and holds its lease:
once that operation has ended (finished, released, lapsed) the execution is final, and a late write gets
Conflict, like any other late write from a site that lost its lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from nmdc_runtime.config import Settings, get_settings
from nmdc_runtime.domain.errors import Forbidden, InvalidInput, LeaseLost
from nmdc_runtime.domain.operations import active_operation_for_execution, expire_if_lapsed
from nmdc_runtime.models import Execution
from nmdc_runtime.store import executions as store
from nmdc_runtime.store import operations as operations_store


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
    now: datetime,
    settings: Settings | None = None,
) -> Execution:
    """Record what `site_id` did under its active claim on the job; its outputs become its data resources.

    NotFound (unknown job), Forbidden (another site's claim), Conflict (no active claim), InvalidInput
    (an operation that is not this job's): see `active_operation_for_execution`.
    """
    op, job = active_operation_for_execution(
        session, job_id=job_id, operation_id=operation_id, site_id=site_id, now=now, settings=settings
    )
    return store.create_execution(
        session,
        job_id=job.id,
        site_id=site_id,
        operation_id=op.id,
        workflow_id=job.workflow_id,
        status=status,
        started_at=started_at,
        ended_at=ended_at,
        outputs=outputs,
        details=details,
        now=now,
    )


def update_execution(
    session: Session,
    *,
    job_id: str,
    execution_id: str,
    site_id: str,
    now: datetime,
    status: str | None = None,
    ended_at: datetime | None = None,
    details: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> Execution:
    """Correct an execution: only its site, only while its operation is open (see the module docstring).

    `details` is merged shallowly; a null value removes a key.
    """
    settings = settings or get_settings()
    job = operations_store.lock_job_or_404(session, job_id=job_id)
    execution = store.get_execution(session, job_id=job.id, execution_id=execution_id, lock=True)
    if execution.site_id != site_id:
        raise Forbidden("only the executing site may change an execution")
    active = expire_if_lapsed(
        session, operations_store.open_operation(session, job_id=job.id), job, now=now, settings=settings
    )
    if active is None or active.id != execution.operation_id:
        raise LeaseLost(f"operation {execution.operation_id} has ended: execution {execution_id} is final")
    if ended_at is not None and ended_at < execution.started_at:
        raise InvalidInput("ended_at is before started_at", field="ended_at", location="body")
    if status is not None:
        execution.status = status
    if ended_at is not None:
        execution.ended_at = ended_at
    if details is not None:
        merged = dict(execution.details or {})
        for key, value in details.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        execution.details = merged
    execution.updated_at = now
    session.flush()
    return execution
