"""The SQL form of the rules that queries need, one expression each, beside their Python form's name.

Each expression here says in SQL what a function of `nmdc_runtime.domain.operations` says in Python, for the
queries that must find rows by the rule (the claimable listing, the lease reaper, the status figures) rather
than decide about one locked row. `tests/integration/test_rules_agree.py` runs both forms on every case and
proves they agree; a change to one without the other fails there.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

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


def claimable_by(
    site_id: str, now: datetime | sa.ColumnElement, drain_after: int | sa.ColumnElement
) -> sa.ColumnElement[bool]:
    """`domain.operations.claimable` for `site_id`: jobs it could claim at `now` (none while it is drained)."""
    return sa.and_(
        open_for_claim(now),
        Job.workflow_id.in_(capable_workflows(site_id)),
        sa.not_(site_drained(site_id, drain_after)),
    )


def claim_grants_access(now: datetime | sa.ColumnElement) -> sa.ColumnElement[bool]:
    """`domain.grants.claim_grants_access`: an operation whose holder may have access grants at `now`: open,
    its lease not lapsed, and no cancel requested."""
    return sa.and_(sa.not_(Operation.done), sa.not_(lapsed_lease(now)), sa.not_(Operation.cancel_requested))


def ending_kind() -> sa.ColumnElement[str]:
    """`domain.drains.ending_kind` of a finished operation: 'fault', 'success' or NULL (the database function
    the trigger that notes each ending calls, migration 0013)."""
    return sa.func.operation_ending_kind(Operation.state, Operation.cancel_requested, Operation.error)


_ZERO = sa.literal_column("0", sa.Integer)
"""A constant written into the statement, not a parameter: the fast paths' statements are compiled once and
given only their named parameters (`store.operations.driver_sql`)."""


def fault_streak(site_id: str | sa.ColumnElement, limit: int | sa.ColumnElement) -> sa.ColumnElement:
    """`domain.drains.fault_streak`, its first `limit` faults, as a JSON list of `[operation id, ended at]`
    (NULL when there are none): what `domain.drains.drain_of` reads. The database function
    `site_fault_streak` (migration 0013): the site's `site_endings` after its last success or undrain, which
    are all faults, found by two index probes (`ix_site_endings_resets`, `ix_site_endings_site_id_seq`)."""
    return sa.func.site_fault_streak(
        sa.type_coerce(site_id, sa.Text), sa.type_coerce(limit, sa.Integer), type_=JSONB
    )


def site_drained(
    site_id: str | sa.ColumnElement, drain_after: int | sa.ColumnElement
) -> sa.ColumnElement[bool]:
    """`domain.drains.drain_of(...) is not None`: the site's streak holds `drain_after` faults."""
    return (
        sa.func.coalesce(sa.func.jsonb_array_length(fault_streak(site_id, drain_after)), _ZERO) >= drain_after
    )


def execution_room(max_executions: int | sa.ColumnElement) -> sa.ColumnElement[bool]:
    """`domain.executions.has_room_for_execution`: the operation may record another execution."""
    return Operation.execution_count < max_executions
