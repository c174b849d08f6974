"""Claims on jobs: claim, release, and an admin's cancel of a job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from nmdc_runtime.domain import drains as drains_rules
from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.errors import NotFound
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.models import Job, Operation
from nmdc_runtime.services.transactions import Once, locked_job, run_once, statements_commit, transaction
from nmdc_runtime.store import drains as drains_store
from nmdc_runtime.store import idempotency as idempotency_store
from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store.idempotency import IdempotentRequest


class Claim(NamedTuple):
    """What a claim gets: the operation, whether it is new (else the caller already held it), and the job."""

    operation: Operation
    created: bool
    job: Job | operations_store.SeenJob


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

    Twin paths, one decision (`_decide`, i.e. `operations_rules.claim`): an unclaimed job (the common case) is
    claimed in two statements and no BEGIN or COMMIT (`_claim_unclaimed`, the fast path); anything else, or a
    job that changed between the two, takes the general path below on the locked rows (docs/architecture.md,
    "Following a claim"). A drained site's claim is refused on either path by that decision (SiteDrained), its
    drain read with the claim's terms, in the statement that reads them.
    """
    now = now or datetime.now(UTC)
    claim = _claim_unclaimed(
        session, job_id=job_id, site_id=site_id, policy=policy, lease_seconds=lease_seconds, now=now
    )
    if claim is not None:
        return claim
    # The general path (twin of `_claim_unclaimed`).
    with transaction(session):
        job, current = locked_job(session, job_id=job_id, now=now, policy=policy)
        terms = operations_store.claim_terms(
            session, site_id=site_id, workflow_id=job.workflow_id, drain_after=policy.site_drain_after
        )
        holder = current.site_id if current else None
        fields = _decide(
            job, holder, site_id=site_id, terms=terms, policy=policy, lease_seconds=lease_seconds, now=now
        )
        if fields is None:
            return Claim(current, created=False, job=job)
        return Claim(operations_store.insert_operation(session, **fields), created=True, job=job)


CLAIM_NEXT_TRIES = 3
"""How often `claim_next` looks again at once when every job it looked at was held by other claims."""


class _NothingClaimed(Exception):
    """No job was claimed: the transaction rolls back (with the Idempotency-Key's row, so that a 204 is not
    remembered). `contended`: jobs were there, but other claims held them all."""

    def __init__(self, *, contended: bool) -> None:
        self.contended = contended


def claim_next(
    session: Session,
    *,
    site_id: str,
    policy: Policy,
    request: IdempotentRequest,
    workflow_ids: Sequence[str] | None = None,
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> Once[Claim] | None:
    """Claim for a site the claimable job (of `workflow_ids`, when given) that was made first among those no
    other claim holds at this moment; None when there is none. Concurrent callers never get the same job, and
    a job another claim took meanwhile is passed over, never refused: the only refusals are the claim
    decision's about the site itself (`_decide`, as for `claim_job`), and a lease too long (422).

    Once per `request`'s Idempotency-Key: a repeat gets the first claim again, as it was (and a claim made for
    a request whose caller went away is found by its retry). Nothing claimed is not remembered.
    """
    now = now or datetime.now(UTC)
    for _ in range(CLAIM_NEXT_TRIES):
        try:
            with transaction(session):
                return run_once(
                    session,
                    request=request,
                    create=lambda: _claim_first_free(
                        session,
                        site_id=site_id,
                        policy=policy,
                        workflow_ids=workflow_ids,
                        lease_seconds=lease_seconds,
                        now=now,
                    ),
                    document=lambda claim: {
                        "operation": idempotency_store.row_document(claim.operation),
                        "job": idempotency_store.row_document(claim.job),
                    },
                    restore=lambda document: Claim(
                        idempotency_store.row_from_document(Operation, document["operation"]),
                        created=True,
                        job=idempotency_store.row_from_document(Job, document["job"]),
                    ),
                )
        except _NothingClaimed as nothing:
            if not nothing.contended:
                return None
    return None


def _claim_first_free(
    session: Session,
    *,
    site_id: str,
    policy: Policy,
    workflow_ids: Sequence[str] | None,
    lease_seconds: int | None,
    now: datetime,
) -> Claim:
    """Inside the caller's transaction: lock the first claimable job no other claim holds
    (`operations_store.lock_next_claimable`) and claim it, decided by `_decide` as `claim_job` decides;
    _NothingClaimed when there is none, or when the job locked is no longer claimable (a holder heartbeated).

    An unclaimed job is written as `claim_job`'s fast path writes it (`claim_as_seen`, on the row this
    transaction holds); a job claimed under a lapsed lease goes through its general path's steps: the lapse
    rule on the locked rows (`locked_job`), the claimable rule (`operations_rules.claimable`), the decision.
    """
    found = operations_store.lock_next_claimable(
        session, site_id=site_id, now=now, drain_after=policy.site_drain_after, workflow_ids=workflow_ids
    )
    if found.job is None:
        # A drained site's listing is empty: it is told why at once, as a claim by id tells it.
        streak = drains_store.fault_streaks(
            session, site_ids=[site_id], drain_after=policy.site_drain_after
        ).get(site_id, [])
        drains_rules.check_not_drained(
            site_id, drains_rules.drain_of(streak, drain_after=policy.site_drain_after)
        )
        raise _NothingClaimed(contended=found.candidates > 0)
    job, terms = found.job, found.terms
    if job.status == JobStatus.UNCLAIMED:
        seen_status, seen_attempts = job.status, job.attempts
        fields = _decide(
            job, None, site_id=site_id, terms=terms, policy=policy, lease_seconds=lease_seconds, now=now
        )
        operation = operations_store.claim_as_seen(
            session, job=job, seen_status=seen_status, seen_attempts=seen_attempts, operation=fields
        )
        if operation is None:  # Not while this transaction holds the job; the index would say so.
            raise _NothingClaimed(contended=True)
        return Claim(operation, created=True, job=job)
    locked, current = locked_job(session, job_id=job.id, now=now, policy=policy)
    if not operations_rules.claimable(
        locked,
        current,
        site_capabilities=terms.site_capabilities,
        required_capabilities=terms.required_capabilities,
        site_drained=drains_rules.drain_of(terms.fault_streak, drain_after=policy.site_drain_after)
        is not None,
        now=now,
    ):
        raise _NothingClaimed(contended=True)
    fields = _decide(
        locked, None, site_id=site_id, terms=terms, policy=policy, lease_seconds=lease_seconds, now=now
    )
    return Claim(operations_store.insert_operation(session, **fields), created=True, job=locked)


def _claim_unclaimed(
    session: Session, *, job_id: str, site_id: str, policy: Policy, lease_seconds: int | None, now: datetime
) -> Claim | None:
    """The fast path of `claim_job` (its twin is the general path there): the claim of a job that is
    unclaimed, decided by `_decide` on the job as one statement read it, and written by a second that applies
    it only if the job is still as read (`operations_store.claim_as_seen`); None when the job is not unclaimed
    (or unknown), or changed between the two: the caller takes the general path. Domain errors (capabilities,
    lease) are raised as the general path raises them.

    An unclaimed job has no open operation (every ending that makes a job unclaimed ends its operation), so
    there is no lease to end, and the holder is nobody.
    """
    with statements_commit(session):
        seen = operations_store.job_and_claim_terms(
            session, job_id=job_id, site_id=site_id, drain_after=policy.site_drain_after
        )
        if seen is None or seen[0].status != JobStatus.UNCLAIMED:
            return None
        job, terms = seen
        seen_status, seen_attempts = job.status, job.attempts
        fields = _decide(
            job, None, site_id=site_id, terms=terms, policy=policy, lease_seconds=lease_seconds, now=now
        )
        operation = operations_store.claim_as_seen(
            session, job=job, seen_status=seen_status, seen_attempts=seen_attempts, operation=fields
        )
    return None if operation is None else Claim(operation, created=True, job=job)


def _decide(
    job: operations_rules.Job,
    holder_site_id: str | None,
    *,
    site_id: str,
    terms: operations_store.ClaimTerms,
    policy: Policy,
    lease_seconds: int | None,
    now: datetime,
) -> dict[str, Any] | None:
    """`operations_rules.claim` on a job, who holds it, and the terms the store read: the decision both paths
    apply."""
    return operations_rules.claim(
        job,
        holder_site_id=holder_site_id,
        site_id=site_id,
        site_capabilities=terms.site_capabilities,
        required_capabilities=terms.required_capabilities,
        fault_streak=terms.fault_streak,
        drain_after=policy.site_drain_after,
        workflow_lease_seconds=terms.lease_seconds,
        requested_lease_seconds=lease_seconds,
        default_lease_seconds=policy.claim_lease_seconds,
        now=now,
    )


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
        operations_rules.release(
            op, job, now=now, retention_seconds=policy.operation_retention_seconds, reason=reason
        )
        return job


def cancel_job(session: Session, *, job_id: str, policy: Policy, now: datetime | None = None) -> Job:
    """An admin cancels a job for good (see `operations_rules.cancel_job`).

    As with an admin's cancel of the operation itself, the request comes before the lapse rule: an open
    operation whose lease lapsed ends `canceled` (the attempt given back), not `expired`.
    """
    now = now or datetime.now(UTC)
    with transaction(session):
        job = operations_store.lock_job_or_404(session, job_id=job_id)
        op = operations_store.open_operation(session, job_id=job.id)
        operations_rules.cancel_job(
            job,
            op,
            now=now,
            retention_seconds=policy.operation_retention_seconds,
            grace_seconds=policy.cancel_grace_seconds,
        )
        return job
