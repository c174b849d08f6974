"""The SQL form of the rules that queries need, one expression each, beside their Python form's name.

Each expression here says in SQL what a function of `nmdc_runtime.domain.operations` says in Python, for the
queries that must find rows by the rule (the claimable listing, the lease reaper, the status figures) rather
than decide about one locked row. `tests/integration/test_rules_agree.py` runs both forms on every case and
proves they agree; a change to one without the other fails there.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.models import Job, Operation, Site, Workflow


def lapsed_lease(now: datetime | sa.ColumnElement) -> sa.ColumnElement[bool]:
    """`domain.operations.lease_lapsed`: open, lease ended at or before `now`, and not paused (unless a cancel
    was requested)."""
    return sa.and_(
        # `NOT done`, as the partial indexes say (`done IS FALSE` would not match them: a sequential scan).
        sa.not_(Operation.done),
        Operation.lease_expire_time <= now,
        sa.or_(sa.not_(Operation.paused), Operation.cancel_requested),
    )


def unclaimed() -> sa.ColumnElement[bool]:
    """The first part of `open_for_claim`: the job is unclaimed (the partial index `ix_jobs_unclaimed`)."""
    return Job.status == JobStatus.UNCLAIMED.value


def claimed_under_lapsed_lease(now: datetime | sa.ColumnElement) -> sa.ColumnElement[bool]:
    """The second part of `open_for_claim`, over a job and its operation (the caller joins them on
    `job_id`): claimed, the operation's lease lapsed, and its ending gives the job back (attempts left, or a
    cancel request)."""
    return sa.and_(
        Job.status == JobStatus.CLAIMED.value,
        lapsed_lease(now),
        sa.or_(Job.attempts < Job.max_attempts, Operation.cancel_requested),
    )


def open_for_claim(now: datetime | sa.ColumnElement) -> sa.ColumnElement[bool]:
    """The job part of `domain.operations.claimable`: unclaimed, or claimed under a lapsed lease whose ending
    gives the job back (attempts left, or a cancel request)."""
    return sa.or_(
        unclaimed(),
        sa.exists().where(Operation.job_id == Job.id, claimed_under_lapsed_lease(now)),
    )


def capable_workflows(site_id: str) -> sa.Select:
    """`domain.operations.capabilities_cover` for every workflow: the ids of those `site_id` may run."""
    site_capabilities = sa.select(Site.capabilities).where(Site.id == site_id).scalar_subquery()
    return sa.select(Workflow.id).where(Workflow.required_capabilities.contained_by(site_capabilities))


def claimable_by(site_id: str, now: datetime | sa.ColumnElement) -> sa.ColumnElement[bool]:
    """`domain.operations.claimable` for `site_id`: jobs it could claim at `now`."""
    return sa.and_(open_for_claim(now), Job.workflow_id.in_(capable_workflows(site_id)))
