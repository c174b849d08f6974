"""Claims on jobs: claim, release, and an admin's cancel of a job."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy.orm import Session

from nmdc_runtime.domain import operations as rules
from nmdc_runtime.domain.errors import NotFound
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.models import Job, Operation
from nmdc_runtime.services.transactions import locked_job, statements_commit, transaction
from nmdc_runtime.store import operations as store


class Claim(NamedTuple):
    """What a claim gets: the operation, whether it is new (else the caller already held it), and the job."""

    operation: Operation
    created: bool
    job: Job | store.SeenJob


def claim_job(
    session: Session,
    *,
    job_id: str,
    site_id: str,
    policy: Policy,
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> Claim:
    """Claim a job for a site, for `lease_seconds` if given (at most what the workflow allows).

    Atomic under concurrency: the job row stays locked until the commit, so claims of one job queue behind
    each other, and a lapsed operation is ended first, so it never blocks a claim.

    An unclaimed job (the common case) is claimed in two statements and no BEGIN or COMMIT (`_claim_unclaimed`);
    anything else, or a job that changed between the two, takes the general path here.
    """
    now = now or datetime.now(UTC)
    claim = _claim_unclaimed(
        session, job_id=job_id, site_id=site_id, policy=policy, lease_seconds=lease_seconds, now=now
    )
    if claim is not None:
        return claim
    with transaction(session):
        job, current = locked_job(session, job_id=job_id, now=now, policy=policy)
        terms = store.claim_terms(session, site_id=site_id, workflow_id=job.workflow_id)
        decision = rules.decide_claim(
            job_status=JobStatus(job.status),
            holder_site_id=current.site_id if current else None,
            site_id=site_id,
            site_capabilities=terms.site_capabilities,
            required_capabilities=terms.required_capabilities,
        )
        if decision is rules.ClaimDecision.EXISTING:
            return Claim(current, created=False, job=job)
        lease = rules.lease_for_claim(
            requested=lease_seconds,
            workflow_lease_seconds=terms.lease_seconds,
            default_seconds=policy.claim_lease_seconds,
        )
        fields = rules.start_operation(job, site_id=site_id, now=now, lease_seconds=lease)
        return Claim(store.insert_operation(session, **fields), created=True, job=job)


def _claim_unclaimed(
    session: Session, *, job_id: str, site_id: str, policy: Policy, lease_seconds: int | None, now: datetime
) -> Claim | None:
    """The claim of a job that is unclaimed, decided by the same rules on the job as one statement read it,
    and written by a second that applies it only if the job is still as read (`store.claim_as_seen`); None
    when the job is not unclaimed (or unknown), or changed between the two: the caller takes the general
    path. Domain errors (capabilities, lease) are raised as the general path raises them.

    An unclaimed job has no open operation (every ending that makes a job unclaimed ends its operation), so
    there is no lease to end, and the holder is nobody.
    """
    with statements_commit(session):
        seen = store.job_and_claim_terms(session, job_id=job_id, site_id=site_id)
        if seen is None or seen[0].status != JobStatus.UNCLAIMED:
            return None
        job, terms = seen
        seen_status, seen_attempts = job.status, job.attempts
        rules.decide_claim(
            job_status=JobStatus(job.status),
            holder_site_id=None,
            site_id=site_id,
            site_capabilities=terms.site_capabilities,
            required_capabilities=terms.required_capabilities,
        )
        lease = rules.lease_for_claim(
            requested=lease_seconds,
            workflow_lease_seconds=terms.lease_seconds,
            default_seconds=policy.claim_lease_seconds,
        )
        fields = rules.start_operation(job, site_id=site_id, now=now, lease_seconds=lease)
        operation = store.claim_as_seen(
            session, job=job, seen_status=seen_status, seen_attempts=seen_attempts, operation=fields
        )
    return None if operation is None else Claim(operation, created=True, job=job)


def release_job(
    session: Session,
    *,
    job_id: str,
    site_id: str,
    policy: Policy,
    reason: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Job:
    """The holding site gives the job back: its operation ends canceled, with `reason` (`{"code", "message"}`)
    in its error's details when given; the attempt is given back either way.

    NotFound when the site holds no active claim on the job (a lapsed one included).
    """
    now = now or datetime.now(UTC)
    with transaction(session):
        job, op = locked_job(session, job_id=job_id, now=now, policy=policy)
        if op is None or op.site_id != site_id:
            raise NotFound(f"site {site_id} holds no active claim on job {job_id}")
        rules.release(op, job, now=now, retention_seconds=policy.operation_retention_seconds, reason=reason)
        return job


def cancel_job(session: Session, *, job_id: str, policy: Policy, now: datetime | None = None) -> Job:
    """An admin cancels a job for good (see `rules.cancel_job`).

    As with an admin's cancel of the operation itself, the request comes before the lapse rule: an open
    operation whose lease lapsed ends `canceled` (the attempt given back), not `expired`.
    """
    now = now or datetime.now(UTC)
    with transaction(session):
        job = store.lock_job_or_404(session, job_id=job_id)
        op = store.open_operation(session, job_id=job.id)
        rules.cancel_job(job, op, now=now, retention_seconds=policy.operation_retention_seconds)
        return job
