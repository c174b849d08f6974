"""Jobs as resources: made (by hand here; the sensor makes its own), read and listed.

Claims, releases and cancels change jobs too; they live with the operations (store/operations.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import NotFound
from nmdc_runtime.domain.jobs import job_config
from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Job, JobInput, Operation, Site, Workflow
from nmdc_runtime.schemas.common import PageParams
from nmdc_runtime.store.data_resources import get_data_resources
from nmdc_runtime.store.operations import lapsed_lease
from nmdc_runtime.store.pages import fetch_page
from nmdc_runtime.store.workflows import get_workflow


def create_job(
    session: Session,
    *,
    workflow_id: str,
    data_resource_ids: Sequence[str],
    config: dict[str, Any] | None = None,
    max_attempts: int,
    created_by: str,
) -> Job:
    """Make an unclaimed job of a workflow over data resources; its config is fixed now.

    NotFound names an unknown workflow or data resource.
    """
    workflow = get_workflow(session, workflow_id=workflow_id)
    inputs = get_data_resources(session, data_resource_ids=data_resource_ids)
    job = Job(
        id=new_id("job"),
        workflow_id=workflow.id,
        config=job_config(workflow, inputs, config),
        max_attempts=max_attempts,
        created_by=created_by,
    )
    session.add(job)
    session.flush()
    session.add_all(JobInput(job_id=job.id, data_resource_id=row.id) for row in inputs)
    session.flush()
    session.refresh(job)
    return job


def get_job(session: Session, *, job_id: str) -> Job:
    """One job, or NotFound."""
    row = session.get(Job, job_id)
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return row


def list_jobs(
    session: Session,
    *,
    page: PageParams,
    status: JobStatus | None = None,
    workflow_id: str | None = None,
    data_resource_id: str | None = None,
    claimable_by: str | None = None,
) -> tuple[Sequence[Job], str | None]:
    """One page of jobs matching every given filter, in creation order.

    `claimable_by` (a site id) keeps the jobs that site could claim now: unclaimed, or claimed under a lease
    that has lapsed and will leave the job open when it ends, of a workflow whose required capabilities the
    site has. Only the claim itself is authoritative: another site may claim a listed job first.
    """
    stmt = sa.select(Job)
    if status is not None:
        stmt = stmt.where(Job.status == status.value)
    if workflow_id is not None:
        stmt = stmt.where(Job.workflow_id == workflow_id)
    if data_resource_id is not None:
        stmt = stmt.where(
            Job.id.in_(sa.select(JobInput.job_id).where(JobInput.data_resource_id == data_resource_id))
        )
    if claimable_by is not None:
        stmt = stmt.where(_claimable_by(claimable_by))
    return fetch_page(session, stmt, Job.seq, page)


def _claimable_by(site_id: str) -> sa.ColumnElement[bool]:
    lapsed_claim = sa.exists().where(
        Operation.job_id == Job.id,
        lapsed_lease(sa.func.now()),
        # An expiry on the last attempt fails the job; a lapsed cancel request gives the attempt back.
        sa.or_(Job.attempts < Job.max_attempts, Operation.cancel_requested),
    )
    site_capabilities = sa.select(Site.capabilities).where(Site.id == site_id).scalar_subquery()
    capable_workflows = sa.select(Workflow.id).where(
        Workflow.required_capabilities.contained_by(site_capabilities)
    )
    return sa.and_(
        sa.or_(
            Job.status == JobStatus.UNCLAIMED.value,
            sa.and_(Job.status == JobStatus.CLAIMED.value, lapsed_claim),
        ),
        Job.workflow_id.in_(capable_workflows),
    )
