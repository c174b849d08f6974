"""The SQL form of the rules that queries need, one expression each, beside their Python form's name.

Each expression here says in SQL what a function of `nmdc_runtime.domain.operations` says in Python, for the
queries that must find rows by the rule (the claimable listing, the lease reaper, the status figures) rather
than decide about one locked row. `tests/integration/test_rules_agree.py` runs both forms on every case and
proves they agree; a change to one without the other fails there.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by

from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.models import Job, Operation, Site, SiteEnding, Workflow


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
    the trigger that notes each ending calls, migration 0012)."""
    return sa.func.operation_ending_kind(Operation.state, Operation.cancel_requested, Operation.error)


_ZERO = sa.literal_column("0", sa.BigInteger)
"""A constant written into the statement, not a parameter: the fast paths' statements are compiled once and
given only their named parameters (`store.operations.driver_sql`)."""


def _streak(site_id: str | sa.ColumnElement, limit: int | sa.ColumnElement) -> sa.Subquery:
    """The first `limit` faults of the site's streak (`domain.drains.fault_streak`), oldest first: its
    `site_endings` after its last success or undrain, which are all faults. Two index probes and at most
    `limit` rows (`ix_site_endings_resets`, then `ix_site_endings_site_id_seq`)."""
    # `correlate_except`: a `site_id` of the enclosing query (a column of `sites`) is that query's, not another
    # table of this one.
    last_reset = (
        sa.select(sa.func.max(SiteEnding.seq))
        .where(SiteEnding.site_id == site_id, sa.not_(SiteEnding.fault))
        .correlate_except(SiteEnding)
        .scalar_subquery()
    )
    return (
        sa.select(SiteEnding.seq, SiteEnding.operation_id, SiteEnding.ended_at)
        .where(SiteEnding.site_id == site_id, SiteEnding.seq > sa.func.coalesce(last_reset, _ZERO))
        .order_by(SiteEnding.seq)
        .limit(limit)
        .correlate_except(SiteEnding)
        .subquery("streak")
    )


def fault_streak(site_id: str | sa.ColumnElement, limit: int | sa.ColumnElement) -> sa.ScalarSelect:
    """`domain.drains.fault_streak`, its first `limit` faults, as a JSON list of `[operation id, ended at]`
    (NULL when there are none): what `domain.drains.drain_of` reads."""
    streak = _streak(site_id, limit)
    return sa.select(
        sa.func.jsonb_agg(
            aggregate_order_by(
                sa.func.jsonb_build_array(streak.c.operation_id, streak.c.ended_at), streak.c.seq
            )
        )
    ).scalar_subquery()


def site_drained(
    site_id: str | sa.ColumnElement, drain_after: int | sa.ColumnElement
) -> sa.ColumnElement[bool]:
    """`domain.drains.drain_of(...) is not None`: the site's streak holds `drain_after` faults."""
    streak = _streak(site_id, drain_after)
    return sa.select(sa.func.count()).select_from(streak).scalar_subquery() >= drain_after


def execution_room(max_executions: int | sa.ColumnElement) -> sa.ColumnElement[bool]:
    """`domain.executions.has_room_for_execution`: the operation may record another execution."""
    return Operation.execution_count < max_executions
