"""The agent's loop: check the set-up once, then resume the job in hand or claim a new one, one at a time.

The check comes before any claim, so a site that cannot run a job never takes one: the command's executable
resolves and is executable, the state dir is writable, the API answers the site's credentials, the workflow
exists and the site has its capabilities. Before the agent holds a claim, an API that cannot be reached is
retried as the client's policy says (each retry is logged) and then ends the run: the caller reports it and
exits 1. While it holds one, requests are retried for as long as the lease lasts (`nmdc_site.run.heartbeat`).

New work is claimed with `POST /jobs:claimNext`: the server picks the job and, while there is none, holds the
request for up to `CLAIM_WAIT_SECONDS` and answers as soon as one becomes claimable. Against an API without
it (404), the agent lists the claimable jobs and claims one, every `--poll-interval` seconds.

A job given back as the site's own fault (`SITE_FAULT`) ends the run too (exit 1): the next job would fail the
same way, and a supervisor restarting the agent gets the check first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmdc_site.client import (
    ApiError,
    Claim,
    ClientError,
    Conflict,
    Forbidden,
    Job,
    NmdcClient,
    NotFound,
    Operation,
    RetryPolicy,
    Site,
    SiteDrained,
    Workflow,
)
from nmdc_site.run.command import executable
from nmdc_site.run.config import RunConfig
from nmdc_site.run.errors import Interrupted, LeaseRanOut, SiteFault
from nmdc_site.run.job import ClaimedJob
from nmdc_site.run.state import StateDir

log = logging.getLogger("nmdc_site.run")

IDLE_LOG_SECONDS = 300.0
"""How often, at most, the agent says that it found no work."""
RELEASE_ON_EXIT_SECONDS = 1.0
"""How long the release of `--release-on-exit` may take: the agent is gone within 5 s of a stop request."""
CLAIM_WAIT_SECONDS = 30
"""How long one `POST /jobs:claimNext` may wait for a job (the server answers as soon as there is one)."""
DRAINED_LOOK_SECONDS = 60.0
"""How often a drained site's agent looks again whether its drain was lifted."""


class SetupError(Exception):
    """The agent cannot do what it was asked: unknown workflow, missing capability, not a site's credentials."""


class HostProblem(SetupError):
    """This host cannot run a job: the command's executable, or the state dir. `public` says which in fixed
    words, for a release's reason (which every token reads)."""

    def __init__(self, message: str, public: str) -> None:
        super().__init__(message)
        self.public = public


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


@dataclass
class Plan:
    """What the checks found: what the agent would run, for whom (`nmdc-site run --check` prints it)."""

    workflow: Workflow
    site: Site
    executable: str

    def lines(self, config: RunConfig) -> list[str]:
        allowed = ", ".join(
            f"{rule.host}:{rule.port}" if rule.port else rule.host for rule in config.allowed_hosts
        )
        floor = (
            f"a download slower than {config.min_rate:g} bytes a second over {config.stall_seconds:g} s ends "
            "its attempt (UNAVAILABLE)"
            if config.min_rate > 0
            else "no floor on download speed"
        )
        return [
            f"workflow   {self.workflow.id} (version {self.workflow.version}"
            f"{', disabled' if not self.workflow.enabled else ''}), requires: "
            f"{', '.join(self.workflow.required_capabilities) or 'nothing'}",
            f"site       {self.site.id}, capabilities: {', '.join(self.site.capabilities) or 'none'}",
            f"command    {' '.join(config.command)}",
            f"executable {self.executable}",
            "inputs     in place of {inputs} (or appended), each as a local path; environment "
            "NMDC_JOB_ID, NMDC_OPERATION_ID, NMDC_WORKFLOW_ID, NMDC_JOB_CONFIG, NMDC_INPUTS, NMDC_OUTPUT_DIR, "
            "NMDC_PROGRESS_FILE",
            f"downloads  from public addresses{f', and {allowed} (--allow-host)' if allowed else ''}; {floor}",
            f"state dir  {Path(config.state_dir).resolve()} (writable)",
        ]


class Agent:
    """The executing site's loop: resume the job in hand, or claim a new one; one job at a time."""

    def __init__(
        self, api: NmdcClient, config: RunConfig, public_url: str, stopping: threading.Event | None = None
    ) -> None:
        self.api = api
        self.config = config
        self.public_url = public_url.rstrip("/")
        self.state = StateDir(config.state_dir)
        self.stopping = stopping or threading.Event()
        # Jobs this process finished with an error or gave back: not claimed again by it, so a bad input is
        # not hammered.
        self.failed_here: set[str] = set()
        self.handled: list[dict[str, Any]] = []
        self.idle = IdleLog(config.workflow_id, config.poll_interval)
        self.fault: str | None = None
        """Why the run ended with a job given back as the site's own fault, when it did."""
        self.claim_next = True
        """Whether the API has `POST /jobs:claimNext` (until it answers 404)."""
        self._waited = False
        """Whether the last look waited on the server (no sleep before the next), after an empty one."""

    def check(self) -> Plan:
        """The checks before any claim: this host first (the command's executable, a writable state dir), then
        the API (the credentials, the workflow, the site's capabilities). `SetupError` names what fails."""
        try:
            found = executable(self.config.command)
        except SiteFault as exc:
            raise HostProblem(str(exc), "the command's executable is missing or not executable") from None
        try:
            self.state.check_writable()
        except OSError as exc:
            raise HostProblem(
                f"the state dir {self.state.root} is not writable: {exc.strerror or exc}",
                "the agent's state dir is not writable",
            ) from None
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
        return Plan(workflow=workflow, site=site, executable=found)

    # -- finding work

    def _next_job(self) -> tuple[Job, Operation, bool] | None:
        self._waited = False
        try:
            return self._claim_new()
        except SiteDrained as drained:
            # The site's own failures drained it: no claim is taken until staff or its admin lift the drain.
            # Waiting, not exiting: a supervisor restarting the agent would only be told the same.
            log.warning("%s; looking again in %g s", drained.detail, DRAINED_LOOK_SECONDS)
            self.stopping.wait(DRAINED_LOOK_SECONDS)
            self._waited = True
            return None

    def _claim_new(self) -> tuple[Job, Operation, bool] | None:
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
                # A job this process failed or gave back: given back again (the attempt too), and passed over.
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
            except SiteDrained:
                raise
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
        except (Conflict, NotFound) as exc:
            self._forget(saved, exc)
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

    def _forget(self, saved: dict[str, Any], refusal: ApiError) -> None:
        """The recorded job cannot be taken up again (the claim is gone): say what is lost, and forget it."""
        job_id, operation_id = saved["job_id"], saved["operation_id"]
        if saved.get("phase") in ("ran", "executed"):
            try:
                operation = self.api.get_operation(operation_id)
            except ApiError:
                operation = None
            if operation is not None and operation.done and operation.metadata.state == "succeeded":
                log.info("job %s was finished already (operation %s succeeded)", job_id, operation_id)
            else:
                log.warning(
                    "job %s: its finished work (exit status %s) is dropped: the claim is gone (%s)",
                    job_id,
                    saved.get("exit_code"),
                    refusal.detail,
                )
        else:
            log.warning(
                "job %s from the state dir cannot be resumed (%s); forgetting it", job_id, refusal.detail
            )
        self.state.clear()

    def settle(self, problem: HostProblem) -> None:
        """The host check failed: the job recorded in the state dir is not left to lapse. Finished work is
        reported (it needs no command); a job not that far is given back (SITE_FAULT)."""
        saved = self.state.load()
        if saved is None:
            return
        job_id = saved["job_id"]
        if saved.get("phase") != "claimed":
            log.info("job %s: reporting what its command finished before stopping", job_id)
            self.run(recorded_only=True)
            return
        message = f"the site's check before taking the job up again failed: {problem.public}"
        with contextlib.suppress(Conflict, NotFound):  # the claim was gone already
            self.api.release_job(job_id, reason="SITE_FAULT", message=message)
        self.state.clear()
        log.warning("job %s given back (SITE_FAULT): %s", job_id, problem)

    def _release_on_exit(self, job_id: str) -> None:
        """`--release-on-exit`: give the job back (SHUTDOWN) unless it holds finished work, which is kept."""
        saved = self.state.load()
        if saved is None or saved.get("job_id") != job_id:
            return
        if saved.get("phase") != "claimed":
            log.info(
                "job %s has finished work to report: it stays claimed, reported on the next start", job_id
            )
            return
        quick = RetryPolicy(attempts=1, timeout=RELEASE_ON_EXIT_SECONDS)
        try:
            with self.api.retry_policy(quick):
                self.api.release_job(job_id, reason="SHUTDOWN", message="the agent was stopped")
        except (Conflict, NotFound):
            pass  # the claim was gone already
        except ClientError as exc:
            log.warning("could not give job %s back (%s); it stays claimed in the state dir", job_id, exc)
            return
        self.state.clear()
        log.info("stopping; job %s given back (SHUTDOWN)", job_id)

    # -- the loop

    def run(self, *, recorded_only: bool = False) -> int:
        """Handle jobs until stopped (or one job with `once`, or only the job recorded in the state dir with
        `recorded_only`); returns a process exit status.

        API failures before a claim is held propagate (a `ClientError`) once the client's retries are spent.
        """
        while not self.stopping.is_set():
            saved = self.state.load()
            if saved is None and recorded_only:
                return 0
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
                if self.config.release_on_exit:
                    self._release_on_exit(job.id)
                else:
                    log.info("stopping; job %s stays claimed and resumes on the next start", job.id)
                return 130
            except LeaseRanOut as exc:
                log.warning("job %s: %s", job.id, exc)
                log.warning("job %s: the claim stays recorded and is taken up again", job.id)
                continue
            self.handled.append(outcome)
            if outcome.get("state") == "released":
                self.failed_here.add(job.id)
                self.fault = f"job {job.id} given back as this site's fault: {outcome['reason']['message']}"
                return 1
            code = (outcome.get("error") or {}).get("code")
            if code and code != "CANCELLED":
                self.failed_here.add(job.id)
            if self.config.once:
                return 0 if outcome.get("state") == "succeeded" else 1
        return 0
