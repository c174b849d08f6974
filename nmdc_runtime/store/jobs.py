"""Jobs as resources: made (by hand, or by the sensor's batches in store/pipeline.py), read and listed.

A job's config is fixed when the job is made, and it is made in SQL only, from `job_config_sql()`, wherever the
job comes from: the workflow's config, overridden by the config given by hand, plus `data_resources`, the input
data resources in full as the API shows them (`DATA_RESOURCE_DOCUMENT`). Job ids come from the column's
default (`nmdc_runtime.models.JOB_ID_DEFAULT`). Claims, releases and cancels change jobs too; they live with
the operations (store/operations.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import NotFound
from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.models import Job, JobInput
from nmdc_runtime.schemas.common import PageParams
from nmdc_runtime.store.pages import fetch_page
from nmdc_runtime.store.rules import claimable_by

DATA_RESOURCE_DOCUMENT = """
    jsonb_build_object(
        'id', d.id,
        'site_id', d.site_id,
        'name', d.name,
        'url', d.url,
        'data_type', d.data_type,
        'size', d.size,
        'checksums', d.checksums,
        'description', d.description,
        'requires_grant', d.requires_grant,
        'created_at',
            to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
            || CASE WHEN date_part('microseconds', d.created_at)::bigint % 1000000 = 0 THEN ''
                    ELSE to_char(d.created_at AT TIME ZONE 'UTC', '.US') END
            || 'Z'
    )
"""
"""A data resource row `d` as the API shows it (`DataResourceRead`, whose JSON drops a zero fraction too)."""


def job_config_sql(*, documents: str, extra: str = "'{}'::jsonb") -> str:
    """SQL for a new job's config, for workflow row `w`: its config, overridden by `extra`, plus
    `data_resources`: `documents`, a JSON array of `DATA_RESOURCE_DOCUMENT`s."""
    return f"w.config || {extra} || jsonb_build_object('data_resources', {documents})"


_INPUT_DOCUMENTS = f"""coalesce(
    (SELECT jsonb_agg({DATA_RESOURCE_DOCUMENT} ORDER BY u.ord)
     FROM unnest(CAST(:data_resource_ids AS text[])) WITH ORDINALITY AS u(id, ord)
     JOIN data_resources d ON d.id = u.id),
    '[]'::jsonb)"""

_CREATE_JOB = sa.text(
    f"""
    INSERT INTO jobs (workflow_id, config, max_attempts, created_by)
    SELECT w.id, {job_config_sql(extra="CAST(:extra AS jsonb)", documents=_INPUT_DOCUMENTS)},
           :max_attempts, :created_by
    FROM workflows w
    WHERE w.id = :workflow_id
    RETURNING *
    """
)


def create_job(
    session: Session,
    *,
    workflow_id: str,
    data_resource_ids: Sequence[str],
    config: dict[str, Any] | None,
    max_attempts: int,
    created_by: str,
) -> Job:
    """Insert an unclaimed job of a workflow over data resources, and its inputs; the caller checked they
    exist (see `nmdc_runtime.services.jobs.create_job`)."""
    ids = list(dict.fromkeys(data_resource_ids))
    job = session.execute(
        sa.select(Job).from_statement(_CREATE_JOB),
        {
            "workflow_id": workflow_id,
            "extra": json.dumps(config or {}),
            "data_resource_ids": ids,
            "max_attempts": max_attempts,
            "created_by": created_by,
        },
    ).scalar_one()
    if ids:
        session.execute(sa.insert(JobInput), [{"job_id": job.id, "data_resource_id": id_} for id_ in ids])
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
    claimable_by_site: str | None = None,
    now: datetime | None = None,
) -> tuple[Sequence[Job], str | None]:
    """One page of jobs matching every given filter, in creation order.

    `claimable_by_site` (a site id) keeps the jobs that site could claim at `now` (default: the database's
    clock), as `nmdc_runtime.store.rules.claimable_by` says. Only the claim itself is authoritative: another
    site may claim a listed job first.
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
    if claimable_by_site is not None:
        stmt = stmt.where(claimable_by(claimable_by_site, sa.func.now() if now is None else now))
    return fetch_page(session, stmt, Job.seq, page)
