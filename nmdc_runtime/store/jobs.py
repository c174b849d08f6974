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
from sqlalchemy.orm import Session, aliased

from nmdc_runtime.domain.errors import NotFound
from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.models import Job, JobInput, Operation
from nmdc_runtime.schemas.common import PageParams
from nmdc_runtime.store.pages import fetch_page
from nmdc_runtime.store.rules import capable_workflows, claimed_under_lapsed_lease, lapsed_lease, unclaimed

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


def jobs_query(
    *,
    page: PageParams,
    status: JobStatus | None = None,
    workflow_id: str | None = None,
    data_resource_id: str | None = None,
    claimable_by_site: str | None = None,
    now: datetime | None = None,
) -> tuple[sa.Select, Any]:
    """The query of `list_jobs` before its page is cut (`pages.page_query`), and the `seq` it pages on."""
    conditions = []
    if status is not None:
        conditions.append(Job.status == status.value)
    if workflow_id is not None:
        conditions.append(Job.workflow_id == workflow_id)
    if data_resource_id is not None:
        conditions.append(
            Job.id.in_(sa.select(JobInput.job_id).where(JobInput.data_resource_id == data_resource_id))
        )
    if claimable_by_site is None:
        return sa.select(Job).where(*conditions), Job.seq
    return _claimable(claimable_by_site, sa.func.now() if now is None else now, conditions, page)


def _claimable(
    site_id: str, now: datetime | sa.ColumnElement, conditions: list[sa.ColumnElement], page: PageParams
) -> tuple[sa.Select, Any]:
    """The jobs `rules.claimable_by` keeps, matching `conditions`, built so that a page costs what the open
    work costs, not every job ever made: the union of the two parts of `rules.open_for_claim`, each from
    an index of its own, merged in `seq` order.

    - unclaimed jobs: for each workflow the site may run, its first unclaimed jobs after the page's start
      (at most a page of them, from `ix_jobs_unclaimed_workflow`);
    - claims under a lapsed lease: open operations whose lease lapsed (`ix_operations_open_lease`), then
      their jobs.

    The outer query orders the union by `seq` and cuts the page (`pages.page_query`).
    """
    after = [] if page.after is None else [Job.seq > page.after]
    capable = capable_workflows(site_id).subquery("capable")
    waiting = (
        sa.select(Job)
        .where(Job.workflow_id == capable.c.id, unclaimed(), *conditions, *after)
        .order_by(Job.seq)
        .limit(page.size + 1)
        .lateral("waiting")
    )
    # The jobs of the lapsed leases, worked out first (`= ANY(ARRAY(...))`: a list, not a join the planner
    # could start from the jobs' side), so this part reads the few lapsed operations, not every claimed job.
    lapsed_jobs = sa.select(Operation.job_id).where(lapsed_lease(now)).scalar_subquery()
    lapsed = (
        sa.select(Job)
        .join(Operation, Operation.job_id == Job.id)
        .where(
            Job.id == sa.any_(sa.func.array(lapsed_jobs)),
            claimed_under_lapsed_lease(now),
            Job.workflow_id.in_(capable_workflows(site_id)),
            *conditions,
        )
    )
    # The parts differ in status, and a job has at most one open operation (uq_operations_open_job): no job
    # comes twice.
    union = sa.union_all(sa.select(waiting).select_from(capable.join(waiting, sa.true())), lapsed)
    job = aliased(Job, union.subquery("claimable"))
    return sa.select(job), job.seq


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
    clock), as `nmdc_runtime.store.rules.claimable_by` says (in the form `_claimable` gives it). Only the
    claim itself is authoritative: another site may claim a listed job first.
    """
    stmt, seq = jobs_query(
        page=page,
        status=status,
        workflow_id=workflow_id,
        data_resource_id=data_resource_id,
        claimable_by_site=claimable_by_site,
        now=now,
    )
    return fetch_page(session, stmt, seq, page)
