"""The agent's loop: check the set-up once, then resume the job in hand or claim a new one, one at a time.

New work is claimed with `POST /jobs:claimNext`: the server picks the job and, while there is none, holds the
request for up to `CLAIM_WAIT_SECONDS` and answers as soon as one becomes claimable. Against an API without
it (404), the agent lists the claimable jobs and claims one, every `--poll-interval` seconds.

Before the agent holds a claim, an API that cannot be reached is retried as the client's policy says (each
retry is logged) and then ends the run: the caller reports it and exits 1. While it holds one, requests are
retried for as long as the lease lasts (`nmdc_site.run.heartbeat`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from nmdc_site.client import (
    ApiError,
    Claim,
    Conflict,
    Forbidden,
    Job,
    NmdcClient,
    NotFound,
    Operation,
    Workflow,
)
from nmdc_site.run.config import RunConfig
from nmdc_site.run.errors import Interrupted, LeaseRanOut
from nmdc_site.run.job import ClaimedJob
from nmdc_site.run.state import StateDir

log = logging.getLogger("nmdc_site.run")

IDLE_LOG_SECONDS = 300.0
"""How often, at most, the agent says that it found no work."""
CLAIM_WAIT_SECONDS = 30
"""How long one `POST /jobs:claimNext` may wait for a job (the server answers as soon as there is one)."""


class SetupError(Exception):
    """The agent cannot do what it was asked: unknown workflow, missing capability, not a site's credentials."""


class IdleLog:
    """Says "no claimable job for W" at the first empty look, then at most every `every` seconds."""

    def __init__(self, workflow_id: str, poll_interval: float, every: float = IDLE_LOG_SECONDS) -> None:
        self.workflow_id = workflow_id
        self.poll_interval = poll_interval
        self.every = every
        self._since: float | None = None
        self._looks = 0

    def empty(self) -> None:
        """One look found nothing."""
        now = time.monotonic()
        self._looks += 1
        if self._since is None or now - self._since >= self.every:
            log.info(
                "no claimable job for %s (%d look%s; looking every %g s)",
                self.workflow_id,
                self._looks,
                "" if self._looks == 1 else "s",
                self.poll_interval,
            )
            self._since = now
            self._looks = 0

    def found(self) -> None:
        """Work was found: the next empty look is said again at once."""
        self._since = None
        self._looks = 0

    @property
    def waiting(self) -> bool:
        """Whether the last look found nothing (and none found work since)."""
        return self._since is not None


class Agent:
    """The executing site's loop: resume the job in hand, or claim a new one; one job at a time."""

    def __init__(self, api: NmdcClient, config: RunConfig, public_url: str) -> None:
        self.api = api
        self.config = config
        self.public_url = public_url.rstrip("/")
        self.state = StateDir(config.state_dir)
        self.stopping = threading.Event()
        # Jobs this process finished with an error: not claimed again by it, so a bad input is not hammered.
        self.failed_here: set[str] = set()
        self.handled: list[dict[str, Any]] = []
        self.idle = IdleLog(config.workflow_id, config.poll_interval)
        self.claim_next = True
        """Whether the API has `POST /jobs:claimNext` (until it answers 404)."""
        self._waited = False
        """Whether the last look waited on the server (no sleep before the next), after an empty one."""

    def check(self) -> Workflow:
        """The start-up checks: the workflow exists and this site has every capability it requires."""
        workflow_id = self.config.workflow_id
        try:
            workflow = self.api.get_workflow(workflow_id)
        except NotFound:
            raise SetupError(
                f"workflow {workflow_id!r} does not exist (GET /workflows/{workflow_id}: 404)"
            ) from None
        me = self.api.me()
        if not me.site_id:
            raise SetupError(
                "these credentials are not a site client's: `nmdc-site run` claims jobs for a site"
            )
        site = self.api.get_site(me.site_id)
        missing = sorted(set(workflow.required_capabilities) - set(site.capabilities))
        if missing:
            raise SetupError(
                f"site {site.id} lacks the capabilities {', '.join(missing)} that workflow {workflow.id} "
                f"requires (it has: {', '.join(site.capabilities) or 'none'})"
            )
        if not workflow.enabled:
            log.warning("workflow %s is disabled: no new jobs are made for it", workflow.id)
        log.info("site %s takes jobs of workflow %s (version %s)", site.id, workflow.id, workflow.version)
        return workflow

    # -- finding work

    def _next_job(self) -> tuple[Job, Operation, bool] | None:
        self._waited = False
        if self.claim_next:
            # The first look after work is at once, so that an empty one is said at once; the next ones wait.
            wait = CLAIM_WAIT_SECONDS if self.idle.waiting else 0
            try:
                claim = self._claim_next(wait)
            except NotFound:
                log.info(
                    "the API has no POST /jobs:claimNext: listing claimable jobs every %g s instead",
                    self.config.poll_interval,
                )
                self.claim_next = False
            except ApiError as exc:
                if exc.status_code != 429:
                    raise
                log.warning(
                    "could not wait for a job (%s); looking again in %g s",
                    exc.detail,
                    self.config.poll_interval,
                )
                return None
            else:
                if claim is None:
                    self._waited = True
                    self.idle.poll_interval = CLAIM_WAIT_SECONDS
                    return None
                if claim.job.id not in self.failed_here:
                    log.info("claimed job %s: operation %s", claim.job.id, claim.operation.id)
                    return claim.job, claim.operation, True
                # A job this process finished with an error: given back (the attempt too), and passed over.
                log.info("giving back job %s, which failed here", claim.job.id)
                self.api.release_job(claim.job.id)
        return self._list_then_claim()

    def _claim_next(self, wait: int) -> Claim | None:
        """`POST /jobs:claimNext` for the workflow, waiting up to `wait` seconds, on a thread of its own: a stop
        does not wait for its answer (the process ends, its connection with it, and the server stops waiting).
        One Idempotency-Key per call, kept across the client's retries: a claim whose answer was lost is
        found again."""
        answer: dict[str, Any] = {}
        finished = threading.Event()

        def call() -> None:
            try:
                answer["claim"] = self.api.claim_next(
                    workflow_ids=[self.config.workflow_id],
                    wait_seconds=wait,
                    lease_seconds=self.config.lease_seconds,
                )
            except BaseException as exc:
                answer["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=call, name="claim-next", daemon=True).start()
        while not finished.wait(0.2):
            if self.stopping.is_set():
                return None
        if "error" in answer:
            raise answer["error"]
        return answer["claim"]

    def _list_then_claim(self) -> tuple[Job, Operation, bool] | None:
        for job in self.api.list_jobs(claimable=True, workflow_id=self.config.workflow_id):
            if job.id in self.failed_here:
                continue
            try:
                claim = self.api.claim_job(job.id, lease_seconds=self.config.lease_seconds)
            except (Conflict, Forbidden, NotFound) as exc:
                log.info("could not claim %s: %s", job.id, exc.detail)
                continue
            log.info("claimed job %s: operation %s", job.id, claim.operation.id)
            return job, claim.operation, True
        return None

    def _resume(self, saved: dict[str, Any]) -> tuple[Job, Operation, bool] | None:
        job_id = saved["job_id"]
        try:
            job = self.api.get_job(job_id)
            claim = self.api.claim_job(job_id, lease_seconds=self.config.lease_seconds)
        except (Conflict, NotFound, Forbidden) as exc:
            log.warning("job %s from the state dir cannot be resumed (%s); forgetting it", job_id, exc.detail)
            self.state.clear()
            return None
        if claim.operation.id != saved["operation_id"]:
            log.info("lease had lapsed: job %s now runs under operation %s", job_id, claim.operation.id)
            saved["operation_id"] = claim.operation.id
            # An execution posted under the old operation does not finish the new one.
            if saved.get("phase") == "executed":
                saved["phase"] = "ran"
                saved.pop("execution_id", None)
            self.state.save(saved)
        else:
            log.info(
                "resuming job %s, operation %s, at step %s", job_id, claim.operation.id, saved.get("phase")
            )
        return job, claim.operation, claim.new

    # -- the loop

    def run(self) -> int:
        """Handle jobs until stopped (or one job with `once`); returns a process exit status.

        API failures before a claim is held propagate (a `ClientError`) once the client's retries are spent.
        """
        while not self.stopping.is_set():
            saved = self.state.load()
            found = self._resume(saved) if saved else self._next_job()
            if found is None:
                if saved is None:
                    self.idle.empty()
                    if not self._waited:
                        self.stopping.wait(self.config.poll_interval)
                continue  # else the saved job was dropped: look for new work right away
            self.idle.found()
            job, operation, new = found
            if saved is None:
                saved = {
                    "job_id": job.id,
                    "operation_id": operation.id,
                    "workflow_id": job.workflow_id,
                    "phase": "claimed",
                }
                self.state.save(saved)
            claimed = ClaimedJob(
                self.api,
                self.config,
                self.state,
                job=job,
                operation=operation,
                saved=saved,
                new=new,
                public_url=self.public_url,
                stopping=self.stopping,
            )
            try:
                outcome = claimed.handle()
            except Interrupted:
                log.info("stopping; job %s stays claimed and resumes on the next start", job.id)
                return 130
            except LeaseRanOut as exc:
                log.warning("job %s: %s", job.id, exc)
                log.warning("job %s: the claim stays recorded and is taken up again", job.id)
                continue
            code = (outcome.get("error") or {}).get("code")
            if code and code != "CANCELLED":
                self.failed_here.add(job.id)
            self.handled.append(outcome)
            if self.config.once:
                return 0 if outcome.get("state") == "succeeded" else 1
        return 0
