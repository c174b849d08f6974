"""Operations: the promises claims return; read by anyone, heartbeated and finished by the holding site."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from api.deps import AdminPrincipal, CurrentPrincipal, PageDep, SessionDep, SettingsDep
from api.routes.executions import present_executions
from nmdc_runtime.domain import operations as domain
from nmdc_runtime.models import Operation
from nmdc_runtime.schemas.common import Page
from nmdc_runtime.schemas.operations import OperationMetadata, OperationRead, OperationUpdate
from nmdc_runtime.store import executions as executions_store
from nmdc_runtime.store import operations as store

router = APIRouter(tags=["operations"])

_NOT_FOUND = {404: {"description": "Unknown operation (or deleted after its retention period)"}}
_FINISHED = {409: {"description": "The operation is finished, or its lease lapsed"}}


def present_operations(session: Session, operations: Sequence[Operation]) -> list[OperationRead]:
    """Operations as the API shows them: fixed metadata keys from columns, results in full."""
    executions = executions_store.executions_by_id(
        session, execution_ids=[op.result_execution_id for op in operations if op.result_execution_id]
    )
    results = {
        row.id: doc
        for row, doc in zip(
            executions.values(), present_executions(session, list(executions.values())), strict=True
        )
    }
    return [
        OperationRead(
            id=op.id,
            done=op.done,
            result=results.get(op.result_execution_id) if op.result_execution_id else None,
            error=op.error,
            metadata=OperationMetadata.model_validate(
                {
                    **(op.extra_metadata or {}),
                    "job_id": op.job_id,
                    "site_id": op.site_id,
                    "workflow_id": op.workflow_id,
                    "attempt": op.attempt,
                    "state": op.state,
                    "lease_expire_time": op.lease_expire_time,
                    "cancel_requested": op.cancel_requested,
                    "paused": op.paused,
                }
            ),
            create_time=op.create_time,
            update_time=op.update_time,
            expire_time=op.expire_time,
        )
        for op in operations
    ]


def present_operation(session: Session, operation: Operation) -> OperationRead:
    """One operation as the API shows it."""
    return present_operations(session, [operation])[0]


@router.get("/operations", response_model=Page[OperationRead])
def list_operations(
    session: SessionDep,
    _: CurrentPrincipal,
    page: PageDep,
    job_id: Annotated[str | None, Query(max_length=128, description="Operations of this job.")] = None,
    site_id: Annotated[str | None, Query(max_length=64, description="Claimed by this site.")] = None,
    workflow_id: Annotated[str | None, Query(max_length=64, description="Of jobs of this workflow.")] = None,
    data_resource_id: Annotated[
        str | None, Query(max_length=128, description="Of jobs reading this data resource.")
    ] = None,
    done: Annotated[
        bool | None, Query(description="Only finished (true) or unfinished (false) ones.")
    ] = None,
) -> Page[OperationRead]:
    """Operations, in creation order. Finished ones are deleted after their `expire_time`."""
    rows, token = store.list_operations(
        session,
        page=page,
        job_id=job_id,
        site_id=site_id,
        workflow_id=workflow_id,
        data_resource_id=data_resource_id,
        done=done,
    )
    return Page[OperationRead](resources=present_operations(session, rows), next_page_token=token)


@router.get("/operations/{op_id}", response_model=OperationRead, responses=_NOT_FOUND)
def get_operation(op_id: str, session: SessionDep, _: CurrentPrincipal) -> OperationRead:
    """One operation. An open one whose lease has lapsed is shown as it is stored (`running` with a
    `lease_expire_time` in the past) until something acts on it."""
    return present_operation(session, store.get_operation(session, op_id=op_id))


@router.patch(
    "/operations/{op_id}",
    response_model=OperationRead,
    responses={
        **_NOT_FOUND,
        **_FINISHED,
        403: {"description": "Another site's operation, or a user who is not an admin"},
        422: {
            "description": "Invalid body, a read-only metadata key changed, or a result that is not a "
            "succeeded execution of this job by the holding site"
        },
    },
)
def update_operation(
    op_id: str, body: OperationUpdate, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal
) -> OperationRead:
    """Heartbeat, report progress, or finish (holding site, or an admin).

    `metadata` is merged into the operation's (a null value removes a key); `job_id`, `site_id`,
    `workflow_id` and `attempt` may be sent back unchanged but not changed (422); `state`,
    `lease_expire_time`, `cancel_requested` and `paused` are the server's and ignored. Every PATCH by the
    holding site renews its lease. `done: true` with `result: {"execution_id"}` (a succeeded execution of
    this job by the holding site, else 422) or with `error: {"code", "message", "details"}` finishes it:
    code `CANCELLED` ends it `canceled` (the attempt is not counted), any other `failed`. The answer carries
    `cancel_requested` and `paused`. A finished operation, or one whose lease lapsed, is 409.
    """
    with domain.keep_expiries(session):
        op = domain.patch_operation(
            session,
            op_id=op_id,
            principal=principal,
            now=datetime.now(UTC),
            metadata=body.metadata,
            done=body.done,
            execution_id=body.result.execution_id if body.result else None,
            error=body.error.model_dump(mode="json") if body.error else None,
            settings=settings,
        )
    return present_operation(session, op)


@router.post(
    "/operations/{op_id}:cancel",
    response_model=OperationRead,
    responses={**_NOT_FOUND, **_FINISHED, 403: {"description": "Neither the holding site nor an admin"}},
)
def cancel_operation(
    op_id: str, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal
) -> OperationRead:
    """Cancel (admin, or the holding site).

    The holding site canceling its own operation releases the job: the operation ends `canceled` (error
    `CANCELLED`), the job goes back to `unclaimed`, and the attempt is not counted. An admin's cancel sets
    `cancel_requested` for the holder to act on, or ends the operation at once when its lease has lapsed.
    """
    with domain.keep_expiries(session):
        op = domain.cancel_operation(
            session, op_id=op_id, principal=principal, now=datetime.now(UTC), settings=settings
        )
    return present_operation(session, op)


@router.post("/operations/{op_id}:pause", response_model=OperationRead, responses={**_NOT_FOUND, **_FINISHED})
def pause_operation(
    op_id: str, session: SessionDep, settings: SettingsDep, _: AdminPrincipal
) -> OperationRead:
    """Pause (admin): state `paused`; its lease does not lapse while paused. Idempotent."""
    with domain.keep_expiries(session):
        op = domain.pause_operation(session, op_id=op_id, now=datetime.now(UTC), settings=settings)
    return present_operation(session, op)


@router.post(
    "/operations/{op_id}:resume", response_model=OperationRead, responses={**_NOT_FOUND, **_FINISHED}
)
def resume_operation(
    op_id: str, session: SessionDep, settings: SettingsDep, _: AdminPrincipal
) -> OperationRead:
    """Resume (admin): state `running` with a fresh lease period. Idempotent."""
    with domain.keep_expiries(session):
        op = domain.resume_operation(session, op_id=op_id, now=datetime.now(UTC), settings=settings)
    return present_operation(session, op)
