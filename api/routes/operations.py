"""Operations: the promises claims return; read by anyone, heartbeated and finished by the holding site."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import (
    AdminPrincipal,
    CurrentPrincipal,
    DatabaseDep,
    PageDep,
    PolicyDep,
    ReadSessionDep,
    SessionDep,
    WaitersDep,
)
from api.presenters import json_response
from nmdc_runtime.presenters import present_operation, present_operations
from nmdc_runtime.schemas.common import Page
from nmdc_runtime.schemas.data import MAX_WAIT_SECONDS
from nmdc_runtime.schemas.operations import OperationRead, OperationUpdate
from nmdc_runtime.services import operations as operations_service
from nmdc_runtime.store import operations as operations_store

router = APIRouter(tags=["operations"])

_NOT_FOUND = {404: {"description": "Unknown operation (or deleted after its retention period)"}}
_FINISHED = {409: {"description": "The operation is finished, or its lease lapsed"}}


@router.get("/operations", response_model=Page[OperationRead])
def list_operations(
    session: ReadSessionDep,
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
    rows, token = operations_store.list_operations(
        session,
        page=page,
        job_id=job_id,
        site_id=site_id,
        workflow_id=workflow_id,
        data_resource_id=data_resource_id,
        done=done,
    )
    return Page[OperationRead](resources=present_operations(session, rows), next_page_token=token)


# Before `/operations/{op_id}`, whose `{op_id}` would take `op-...:wait` whole.
@router.get(
    "/operations/{op_id}:wait",
    response_model=OperationRead,
    responses={
        **_NOT_FOUND,
        429: {"description": "Too many requests waiting, in this process or for this caller (`Retry-After`)"},
    },
)
async def wait_operation(
    op_id: str,
    request: Request,
    database: DatabaseDep,
    principal: CurrentPrincipal,
    waiters: WaitersDep,
    timeout_seconds: Annotated[
        int, Query(ge=0, le=MAX_WAIT_SECONDS, description="How long to wait for the operation to be done.")
    ] = MAX_WAIT_SECONDS,
) -> Response:
    """The operation once it is done, as soon as it is; or as it is when `timeout_seconds` (at most 60) are up
    or the server stops. Any caller, as `GET /operations/{op_id}`."""

    def read():
        with database.read_sessionmaker() as session:
            return present_operation(session, operations_store.get_operation(session, op_id=op_id))

    shown = await waiters.operation(
        read,
        lambda operation: operation.done,
        op_id=op_id,
        key=principal.site_id or principal.key,
        timeout_seconds=timeout_seconds,
        receive=request.receive,
    )
    return json_response(shown, status_code=200)


@router.get("/operations/{op_id}", response_model=OperationRead, responses=_NOT_FOUND)
def get_operation(op_id: str, session: ReadSessionDep, _: CurrentPrincipal) -> OperationRead:
    """One operation. An open one whose lease has lapsed is shown as it is stored (`running` with a
    `lease_expire_time` in the past) until something acts on it."""
    return present_operation(session, operations_store.get_operation(session, op_id=op_id))


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
    op_id: str, body: OperationUpdate, session: SessionDep, policy: PolicyDep, principal: CurrentPrincipal
) -> Response:
    """Heartbeat, report progress, or finish (holding site, or an admin).

    `metadata` is merged into the operation's (a null value removes a key); `job_id`, `site_id`,
    `workflow_id` and `attempt` may be sent back unchanged but not changed (422); `state`,
    `lease_expire_time`, `cancel_requested` and `paused` are the server's and ignored. Every PATCH by the
    holding site renews its lease, until a cancel is requested: the lease then ends within
    NMDC_CANCEL_GRACE_SECONDS. `done: true` with `result: {"execution_id"}` (a succeeded execution of
    this job by the holding site, else 422) or with `error: {"code", "message", "details"}` finishes it:
    code `CANCELLED` ends it `canceled` (the attempt is not counted), any other `failed`. The answer carries
    `cancel_requested` and `paused`. A finished operation, or one whose lease lapsed, is 409.
    """
    patched = operations_service.patch_operation(
        session,
        op_id=op_id,
        principal=principal,
        policy=policy,
        metadata=body.metadata,
        done=body.done,
        execution_id=body.result.execution_id if body.result else None,
        error=body.error.model_dump(mode="json") if body.error else None,
    )
    results = [patched.result] if patched.result is not None else []
    return json_response(present_operation(session, patched.operation, results=results), status_code=200)


@router.post(
    "/operations/{op_id}:cancel",
    response_model=OperationRead,
    responses={**_NOT_FOUND, **_FINISHED, 403: {"description": "Neither the holding site nor an admin"}},
)
def cancel_operation(
    op_id: str, session: SessionDep, policy: PolicyDep, principal: CurrentPrincipal
) -> OperationRead:
    """Cancel (admin, or the holding site).

    The holding site canceling its own operation releases the job: the operation ends `canceled` (error
    `CANCELLED`), the job goes back to `unclaimed`, and the attempt is not counted. An admin's cancel sets
    `cancel_requested` for the holder to act on, or ends the operation at once when its lease has lapsed; from
    then on the holder gets no access grant for the job's data, and the lease ends within
    NMDC_CANCEL_GRACE_SECONDS, heartbeats or not.
    """
    op = operations_service.cancel_operation(session, op_id=op_id, principal=principal, policy=policy)
    return present_operation(session, op)


@router.post("/operations/{op_id}:pause", response_model=OperationRead, responses={**_NOT_FOUND, **_FINISHED})
def pause_operation(op_id: str, session: SessionDep, policy: PolicyDep, _: AdminPrincipal) -> OperationRead:
    """Pause (admin): state `paused`; its lease does not lapse while paused. Idempotent."""
    return present_operation(session, operations_service.pause_operation(session, op_id=op_id, policy=policy))


@router.post(
    "/operations/{op_id}:resume", response_model=OperationRead, responses={**_NOT_FOUND, **_FINISHED}
)
def resume_operation(op_id: str, session: SessionDep, policy: PolicyDep, _: AdminPrincipal) -> OperationRead:
    """Resume (admin): state `running` with a fresh lease period. Idempotent."""
    return present_operation(
        session, operations_service.resume_operation(session, op_id=op_id, policy=policy)
    )
