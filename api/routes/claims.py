"""Custom methods on jobs: claim, cancel and release. The rules are in nmdc_runtime.domain.operations."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from api.deps import AdminPrincipal, SessionDep, SettingsDep, SitePrincipal
from api.routes.operations import present_operation
from nmdc_runtime.domain import operations as domain
from nmdc_runtime.schemas.data import JobRead
from nmdc_runtime.schemas.operations import OperationRead

router = APIRouter(tags=["jobs"])


@router.post(
    "/jobs/{job_id}:claim",
    status_code=201,
    response_model=OperationRead,
    responses={
        200: {
            "model": OperationRead,
            "description": "The caller already holds the active claim: the same operation",
        },
        403: {"description": "The site lacks a capability the workflow requires"},
        404: {"description": "Unknown job"},
        409: {
            "description": "Another site holds an active claim, or the job is succeeded, failed or canceled"
        },
    },
)
def claim_job(
    job_id: str, response: Response, session: SessionDep, settings: SettingsDep, principal: SitePrincipal
) -> OperationRead:
    """Claim a job for the calling site (site clients only): 201 and a new operation, whose lease the site
    renews by PATCH; or 200 and the same operation when the site already holds the claim (a retry is safe).

    At most one active claim per job, whatever the concurrency. A claim whose lease lapsed (and that is not
    paused) is ended as `expired` here and never blocks a new claim. Each claim counts one attempt.
    """
    with domain.keep_expiries(session):
        op, created = domain.claim_job(
            session, job_id=job_id, site_id=principal.site_id, now=datetime.now(UTC), settings=settings
        )
    if not created:
        response.status_code = 200
    return present_operation(session, op)


@router.post(
    "/jobs/{job_id}:cancel",
    response_model=JobRead,
    responses={
        404: {"description": "Unknown job"},
        409: {"description": "The job already succeeded or failed"},
    },
)
def cancel_job(job_id: str, session: SessionDep, settings: SettingsDep, _: AdminPrincipal) -> JobRead:
    """Cancel a job (admin): it becomes `canceled` for good; its active operation gets `cancel_requested`
    (or ends at once when its lease has lapsed). Canceling a canceled job changes nothing."""
    with domain.keep_expiries(session):
        job = domain.cancel_job(session, job_id=job_id, now=datetime.now(UTC), settings=settings)
    return JobRead.model_validate(job)


@router.post(
    "/jobs/{job_id}:release",
    response_model=JobRead,
    responses={404: {"description": "Unknown job, or the caller holds no active claim on it"}},
)
def release_job(job_id: str, session: SessionDep, settings: SettingsDep, principal: SitePrincipal) -> JobRead:
    """Give a claimed job back (the holding site): its operation ends `canceled` (error `CANCELLED`), the job
    returns to `unclaimed`, and the release is not a failed attempt."""
    with domain.keep_expiries(session):
        job = domain.release_job(
            session, job_id=job_id, site_id=principal.site_id, now=datetime.now(UTC), settings=settings
        )
    return JobRead.model_validate(job)
