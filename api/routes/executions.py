"""Executions: what the executing site did for a job, recorded under its active claim."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import CurrentPrincipal, PageDep, PolicyDep, ReadSessionDep, SessionDep, SitePrincipal
from api.idempotency import IdempotencyKeyHeader, idempotent_request, respond
from nmdc_runtime.presenters import present_execution, present_executions
from nmdc_runtime.schemas.common import Page
from nmdc_runtime.schemas.executions import ExecutionCreate, ExecutionRead, ExecutionUpdate
from nmdc_runtime.services import executions as executions_service
from nmdc_runtime.store import executions as executions_store
from nmdc_runtime.store import jobs as jobs_store

router = APIRouter(tags=["executions"])

_ERRORS = {
    403: {"description": "Another site holds the job's claim, or the execution is another site's"},
    404: {"description": "Unknown job or execution"},
    409: {"description": "The caller holds no active claim on the job (finished, released or lapsed)"},
}


@router.post(
    "/jobs/{job_id}/executions",
    status_code=201,
    response_model=ExecutionRead,
    responses={
        **_ERRORS,
        409: {
            "description": "The caller holds no active claim on the job (finished, released or lapsed), or the "
            "claim has recorded NMDC_MAX_EXECUTIONS_PER_OPERATION executions"
        },
        422: {"description": "Invalid body, an operation not of this job, or a reused key"},
    },
)
def create_execution(
    job_id: str,
    body: ExecutionCreate,
    session: SessionDep,
    policy: PolicyDep,
    principal: SitePrincipal,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Record what the calling site did under its active claim on the job (`operation_id` names the claim).

    Each output is registered, in the same transaction, as a data resource of the calling site made by this
    execution, so it can trigger the next workflow. Honours `Idempotency-Key` like `POST /data_resources`.
    Another site's claim is 403; no active claim (finished, released, or a lapsed lease) is 409, and so is an
    execution past NMDC_MAX_EXECUTIONS_PER_OPERATION under one claim.
    """
    recorded = executions_service.record_execution(
        session,
        job_id=job_id,
        site_id=principal.site_id,
        operation_id=body.operation_id,
        status=body.status.value,
        started_at=body.started_at,
        ended_at=body.ended_at,
        outputs=[output.model_dump() for output in body.outputs],
        details=body.details,
        policy=policy,
        request=idempotent_request(principal, idempotency_key, f"POST /jobs/{job_id}/executions", body),
    )
    execution, outputs = recorded.value
    return respond(present_execution(session, execution, outputs=outputs), replayed=recorded.replayed)


@router.get("/jobs/{job_id}/executions", response_model=Page[ExecutionRead], responses={404: _ERRORS[404]})
def list_executions(
    job_id: str, session: ReadSessionDep, _: CurrentPrincipal, page: PageDep
) -> Page[ExecutionRead]:
    """A job's executions, in the order they were reported."""
    jobs_store.get_job(session, job_id=job_id)
    rows, token = executions_store.list_executions(session, job_id=job_id, page=page)
    return Page[ExecutionRead](resources=present_executions(session, rows), next_page_token=token)


@router.get(
    "/jobs/{job_id}/executions/{exec_id}", response_model=ExecutionRead, responses={404: _ERRORS[404]}
)
def get_execution(job_id: str, exec_id: str, session: ReadSessionDep, _: CurrentPrincipal) -> ExecutionRead:
    """One execution of a job."""
    return present_execution(
        session, executions_store.get_execution(session, job_id=job_id, execution_id=exec_id)
    )


@router.patch("/jobs/{job_id}/executions/{exec_id}", response_model=ExecutionRead, responses=_ERRORS)
def update_execution(
    job_id: str,
    exec_id: str,
    body: ExecutionUpdate,
    session: SessionDep,
    policy: PolicyDep,
    principal: SitePrincipal,
) -> ExecutionRead:
    """Correct an execution (`status`, `ended_at`, `details` merged): only the executing site, and only while
    the operation it was reported under is open and holds its lease; after that the execution is final (409)."""
    row = executions_service.update_execution(
        session,
        job_id=job_id,
        execution_id=exec_id,
        site_id=principal.site_id,
        policy=policy,
        status=body.status.value if body.status else None,
        ended_at=body.ended_at,
        details=body.details,
    )
    return present_execution(session, row)
