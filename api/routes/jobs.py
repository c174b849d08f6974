"""Jobs as resources: made by hand, read and listed. Claims and the rest live in claims.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import AdminPrincipal, CurrentPrincipal, PageDep, PolicyDep, ReadSessionDep, SessionDep
from api.presenters import json_response
from nmdc_runtime.domain.errors import Forbidden
from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.schemas.common import Page
from nmdc_runtime.schemas.data import JobCreate, JobRead
from nmdc_runtime.services import catalog as catalog_service
from nmdc_runtime.store import jobs as jobs_store

router = APIRouter(tags=["jobs"])


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobRead,
    responses={404: {"description": "Unknown workflow or data resource"}},
)
def create_job(body: JobCreate, session: SessionDep, policy: PolicyDep, principal: AdminPrincipal) -> JobRead:
    """Make a job by hand (admin). Its config is the workflow's config, overridden by `config`, plus
    `data_resources`: the named data resources in full (those of `inputs` first), `inputs`: those by role, and
    `group`: the one given, else the one its inputs share. An unknown workflow or data resource is 404;
    `inputs` that do not fit the workflow's roles are 422."""
    row = catalog_service.create_job(
        session,
        workflow_id=body.workflow_id,
        data_resource_ids=body.data_resource_ids,
        inputs=body.inputs,
        group=body.group,
        config=body.config,
        max_attempts=policy.max_attempts,
        created_by=principal.key,
    )
    return JobRead.model_validate(row)


@router.get(
    "/jobs", response_model=Page[JobRead], responses={403: {"description": "claimable=true by a non-site"}}
)
def list_jobs(
    session: ReadSessionDep,
    principal: CurrentPrincipal,
    page: PageDep,
    policy: PolicyDep,
    status: Annotated[JobStatus | None, Query(description="Jobs in this status.")] = None,
    workflow_id: Annotated[str | None, Query(max_length=64, description="Jobs of this workflow.")] = None,
    data_resource_id: Annotated[
        str | None, Query(max_length=128, description="Jobs reading this data resource.")
    ] = None,
    group: Annotated[str | None, Query(max_length=256, description="Jobs of this group.")] = None,
    claimable: Annotated[
        bool, Query(description="true: only jobs the calling site could claim now (site clients only).")
    ] = False,
) -> Response:
    """Jobs, in creation order.

    `claimable=true` keeps the jobs the calling site could claim now: unclaimed, or claimed under a lapsed
    lease whose ending gives the job back, of workflows whose `required_capabilities` the site has; none while
    the site is drained. Only a site can claim, so a user asking for `claimable=true` gets 403.
    `claimable=false` is the same as leaving it out.
    """
    if claimable and not principal.is_site:
        raise Forbidden(
            "claimable=true lists what the calling site could claim: it needs a site client token"
        )
    rows, token = jobs_store.list_jobs(
        session,
        page=page,
        status=status,
        workflow_id=workflow_id,
        data_resource_id=data_resource_id,
        group=group,
        claimable_by_site=principal.site_id if claimable else None,
        drain_after=policy.site_drain_after,
    )
    return json_response(
        Page[JobRead](resources=[JobRead.model_validate(row) for row in rows], next_page_token=token),
        status_code=200,
    )


@router.get("/jobs/{job_id}", response_model=JobRead)
def get_job(session: ReadSessionDep, _: CurrentPrincipal, job_id: str) -> JobRead:
    """One job."""
    return JobRead.model_validate(jobs_store.get_job(session, job_id=job_id))
