"""Custom methods on jobs: claim, cancel and release (the transactions are nmdc_runtime.services.claims)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import AdminPrincipal, DatabaseDep, PolicyDep, SessionDep, SitePrincipal, WaitersDep
from api.idempotency import IdempotencyKeyHeader, idempotent_request, respond
from api.metrics import CLAIM_LATENCY
from api.presenters import json_response
from nmdc_runtime.presenters import present_claim, present_operation
from nmdc_runtime.schemas.data import ClaimNextRequest, ClaimRequest, JobRead, ReleaseRequest
from nmdc_runtime.schemas.operations import ClaimedOperationRead, OperationRead
from nmdc_runtime.services import claims as claims_service

router = APIRouter(tags=["jobs"])


@router.post(
    "/jobs:claimNext",
    status_code=201,
    response_model=ClaimedOperationRead,
    responses={
        204: {"description": "Nothing claimable, now or (with `wait_seconds`) before the time was up"},
        403: {
            "description": "The caller is a user, or the site lacks a capability a job's workflow requires"
        },
        409: {"description": "The claim decision refused this site"},
        422: {
            "description": "Invalid body; lease_seconds longer than the claimed job's workflow allows; an "
            "Idempotency-Key reused for another request"
        },
        429: {"description": "Too many requests waiting, in this process or for this site (`Retry-After`)"},
    },
)
async def claim_next(
    request: Request,
    database: DatabaseDep,
    policy: PolicyDep,
    principal: SitePrincipal,
    waiters: WaitersDep,
    body: ClaimNextRequest | None = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Claim the next job for the calling site (site clients only): of the jobs it may claim now (those
    `GET /jobs?claimable=true` lists, of `workflow_ids` when given), the one made first that no other claim
    is taking at this moment. 201 and the new Operation, as `POST /jobs/{job_id}:claim` answers it, with the
    claimed `job`; 204 when there is none.

    Concurrent callers never get the same job, and never 409 for a job another took first. With
    `wait_seconds` (at most 60) and nothing claimable, the request waits and claims as soon as a job becomes
    claimable (made, released, given back; a lapsed lease within a few seconds), else 204 when the time is up
    or the server stops. An `Idempotency-Key` makes a repeat get the first claim again (201,
    `Idempotent-Replayed: true`), also after the client went away while waiting; a 204 is not remembered.
    """
    asked = body or ClaimNextRequest()
    claimant = idempotent_request(principal, idempotency_key, "POST /jobs:claimNext", asked)

    def attempt():
        # In the thread pool; a session per attempt, none held while the request waits.
        with database.sessionmaker() as session:
            claimed = claims_service.claim_next(
                session,
                site_id=principal.site_id,
                policy=policy,
                request=claimant,
                workflow_ids=asked.workflow_ids,
                lease_seconds=asked.lease_seconds,
            )
            if claimed is None:
                return None
            return claimed, present_claim(session, claimed.value.operation, claimed.value.job)

    found = await waiters.claim(
        attempt,
        key=principal.site_id,
        workflow_ids=asked.workflow_ids,
        wait_seconds=asked.wait_seconds,
        receive=request.receive,
    )
    if found is None:
        return Response(status_code=204)
    claimed, answer = found
    if not claimed.replayed:
        operation, job = claimed.value.operation, claimed.value.job
        CLAIM_LATENCY.observe((operation.create_time - job.created_at).total_seconds())
    return respond(answer, replayed=claimed.replayed)


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
        422: {"description": "lease_seconds longer than the workflow allows, or an invalid body"},
        404: {"description": "Unknown job"},
        409: {
            "description": "Another site holds an active claim, or the job is succeeded, failed or canceled; or "
            "the calling site is drained (header NMDC-Error-Code: SITE_DRAINED)"
        },
    },
)
def claim_job(
    job_id: str,
    session: SessionDep,
    policy: PolicyDep,
    principal: SitePrincipal,
    body: ClaimRequest | None = None,
) -> Response:
    """Claim a job for the calling site (site clients only): 201 and a new operation, whose lease the site
    renews by PATCH; or 200 and the same operation when the site already holds the claim (a retry is safe).

    At most one active claim per job, whatever the concurrency. An operation whose lease lapsed is ended here
    (`expired`, or `canceled` when a cancel was requested, paused or not) and never blocks a new claim. Each
    claim counts one attempt. A drained site (its last claims failed at the site, one after another) gets 409
    with the header `NMDC-Error-Code: SITE_DRAINED` until its drain is lifted.

    The lease lasts the workflow's `lease_seconds` (or the server's default); an optional body
    `{"lease_seconds": N}` asks for a shorter one (longer than the workflow allows: 422). Every heartbeat
    renews it by the operation's own `lease_seconds`.
    """
    claim = claims_service.claim_job(
        session,
        job_id=job_id,
        site_id=principal.site_id,
        policy=policy,
        lease_seconds=body.lease_seconds if body else None,
    )
    if claim.created:
        CLAIM_LATENCY.observe((claim.operation.create_time - claim.job.created_at).total_seconds())
    return json_response(
        present_operation(session, claim.operation), status_code=201 if claim.created else 200
    )


@router.post(
    "/jobs/{job_id}:cancel",
    response_model=JobRead,
    responses={
        404: {"description": "Unknown job"},
        409: {"description": "The job already succeeded or failed"},
    },
)
def cancel_job(job_id: str, session: SessionDep, policy: PolicyDep, _: AdminPrincipal) -> JobRead:
    """Cancel a job (admin): it becomes `canceled` for good; its active operation gets `cancel_requested`
    (or ends at once when its lease has lapsed): its holder gets no more access grants, and its lease ends
    within NMDC_CANCEL_GRACE_SECONDS whatever it sends. Canceling a canceled job changes nothing."""
    return JobRead.model_validate(claims_service.cancel_job(session, job_id=job_id, policy=policy))


@router.post(
    "/jobs/{job_id}:release",
    response_model=JobRead,
    responses={
        404: {"description": "Unknown job, or the caller holds no active claim on it"},
        422: {"description": "A reason code other than SITE_FAULT and SHUTDOWN, a message too long"},
    },
)
def release_job(
    job_id: str,
    session: SessionDep,
    policy: PolicyDep,
    principal: SitePrincipal,
    body: ReleaseRequest | None = None,
) -> JobRead:
    """Give a claimed job back (the holding site): its operation ends `canceled` (error `CANCELLED`), the job
    returns to `unclaimed`, and the release is not a failed attempt.

    An optional body `{"reason": {"code", "message"}}` says why: `SITE_FAULT` (the failure was the site's own:
    its configuration, its resources) or `SHUTDOWN` (a graceful give-back, as no body); it is kept as the
    operation's `error.details.reason`.
    """
    return JobRead.model_validate(
        claims_service.release_job(
            session,
            job_id=job_id,
            site_id=principal.site_id,
            policy=policy,
            reason=body.reason.model_dump(mode="json") if body else None,
        )
    )
