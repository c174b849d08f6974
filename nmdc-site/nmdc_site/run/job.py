"""One claimed job, carried through its remaining steps: inputs, the command, the execution, the outcome.

The steps are recorded in the state dir (``claimed`` -> ``ran`` -> ``executed``) so that a restarted agent
carries on where it stopped: inputs already downloaded and verified are kept, a command that had finished is
not run again, and what it finished is never lost: the execution to post and how to finish the operation are
written to the state dir (step ``ran``) before anything is sent, and sent when the API answers, after a restart
too. The execution's POST carries a deterministic ``Idempotency-Key``, so a lost answer is replayed, not
duplicated. Only the API saying that the claim is gone (409) drops finished work, and the agent says so. A
command interrupted by the crash is run again.

Outcomes, by whose fault they are:

* exit status 0: a ``succeeded`` execution with the outputs, and the operation finished with it;
* any other exit status but 126 and 127: a ``failed`` execution, and the operation finished with error
  ``COMMAND_FAILED`` (the command ran and failed);
* an input that differs from what the job declares: ``DATA_LOSS``; one that cannot be fetched (its data site
  unreachable, refusing, redirecting where the agent does not follow, at an address that is not public and
  that ``--allow-host`` does not admit, slower than the floor, or no grant): ``UNAVAILABLE``; a cancel
  request: ``CANCELLED``; none of them posts an execution;
* the site's own fault (`SiteFault`: the executable missing or not executable, exit status 126 or 127, no
  space left, the agent's own crash): the claim is released
  with reason ``SITE_FAULT``, which gives the attempt back: the job is not the worse for this site's trouble.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from nmdc_site import __version__
from nmdc_site.client import (
    ApiError,
    ClientError,
    Conflict,
    DataResource,
    Job,
    NmdcClient,
    NotFound,
    Operation,
    ValidationError,
)
from nmdc_site.files import digests, file_url, published_files
from nmdc_site.run.command import (
    SITE_FAULT_EXIT_CODES,
    CommandOutcome,
    Supervisor,
    command_argv,
    command_environment,
)
from nmdc_site.run.config import RunConfig
from nmdc_site.run.egress import Egress
from nmdc_site.run.errors import Interrupted, LeaseRanOut, OperationLost, SiteFault
from nmdc_site.run.heartbeat import UNANSWERED, Heartbeat
from nmdc_site.run.inputs import InputError, InputUnavailable, Pace, fetch_inputs
from nmdc_site.run.scrub import scrub_lines
from nmdc_site.run.state import StateDir

log = logging.getLogger("nmdc_site.run")

AGENT = f"nmdc-site/{__version__}"
MAX_REASON = 1024
"""The longest release reason message the API takes."""

T = TypeVar("T")


class ClaimedJob:
    """A job this site holds a claim on, with the operation the claim gave and the recorded step."""

    def __init__(
        self,
        api: NmdcClient,
        config: RunConfig,
        state: StateDir,
        *,
        job: Job,
        operation: Operation,
        saved: dict[str, Any],
        new: bool,
        public_url: str,
        stopping: threading.Event,
    ) -> None:
        self.api = api
        self.config = config
        self.state = state
        self.job = job
        self.operation = operation
        self.operation_id = operation.id
        self.saved = saved
        self.public_url = public_url.rstrip("/")
        self.stopping = stopping
        self.heartbeat = Heartbeat(
            api, operation, new=new, interval=config.heartbeat_interval, stopping=stopping
        )
        self.egress = Egress(allowed=config.allowed_hosts)
        self.summary: dict[str, Any] = {"job_id": job.id, "operation_id": operation.id}

    def handle(self) -> dict[str, Any]:
        """Carry the job through its remaining steps; returns a summary for the log and the tests.

        Raises `LeaseRanOut` and `Interrupted` (the claim stays recorded), and an API error that is neither
        a lost claim nor a passing trouble (the claim stays recorded too: the agent exits).
        """
        heartbeat = self.heartbeat
        # Every request made while the claim is held is retried for as long as the lease lasts.
        with self.api.retry_policy(heartbeat.retry_policy()):
            try:
                heartbeat.beat()  # renew now: a resumed claim may be close to its end
                heartbeat.start()
                return self._steps()
            except (LeaseRanOut, Interrupted, ClientError):
                raise
            except OperationLost as exc:
                if self.saved.get("phase") in ("ran", "executed"):
                    log.warning(
                        "job %s: %s; its finished work (exit status %s) is dropped: another site may hold the "
                        "job now",
                        self.job.id,
                        exc,
                        self.saved.get("exit_code"),
                    )
                else:
                    log.warning("job %s: %s; dropping it", self.job.id, exc)
                self.state.clear()
                return {**self.summary, "state": "lost", "reason": str(exc)}
            except SiteFault as exc:
                return self._site_fault(exc)
            except OSError as exc:
                # The state dir or the job's folder failed us (no space left, say): this host's trouble.
                return self._site_fault(
                    SiteFault(f"the agent's own files failed: {exc.strerror or exc}", str(exc)), exc
                )
            except Exception as exc:
                log.exception("job %s: the agent failed", self.job.id)
                return self._site_fault(SiteFault(f"the agent failed: {type(exc).__name__}"), exc)
            finally:
                heartbeat.stop()

    def _site_fault(self, fault: SiteFault, cause: BaseException | None = None) -> dict[str, Any]:
        """Give the job back with reason SITE_FAULT, unless the command had finished: finished work is kept
        (recorded in the state dir) and the error goes on, so the agent stops with the claim recorded."""
        log.error("job %s: %s (%s)", self.job.id, fault, fault.detail)
        if self.saved.get("phase") != "claimed":
            raise cause or fault
        return self._release("SITE_FAULT", str(fault))

    def _release(self, code: str, message: str) -> dict[str, Any]:
        """Give the job back with a reason; the attempt is given back."""
        message = message[:MAX_REASON]
        try:
            try:
                self._held(lambda: self.api.release_job(self.job.id, reason=code, message=message))
            except ValidationError:
                # A server from before release reasons: a plain give-back, the attempt given back all the same.
                self._held(lambda: self.api.release_job(self.job.id))
        except (Conflict, NotFound) as exc:
            log.warning("job %s: the claim was gone already: %s", self.job.id, exc.detail)
        self.state.clear()
        log.info("job %s given back (%s): %s", self.job.id, code, message)
        return {**self.summary, "state": "released", "reason": {"code": code, "message": message}}

    # -- guards between steps

    def _check(self) -> None:
        if self.stopping.is_set():
            raise Interrupted()
        if self.heartbeat.lost:
            raise self.heartbeat.lost

    def _wait_while_paused(self) -> None:
        announced = False
        while self.heartbeat.paused and not self.heartbeat.cancel_requested:
            if not announced:
                log.info("operation paused; waiting")
                announced = True
            self._check()
            self.heartbeat.report(message="paused")
            time.sleep(0.2)
        self._check()

    def _held(self, call: Callable[[], T]) -> T:
        """`call()`, whose retries ran out only when the lease did (or the agent was asked to stop)."""
        try:
            return call()
        except UNANSWERED as exc:
            if self.stopping.is_set():
                raise Interrupted() from exc
            raise LeaseRanOut(f"the lease ran out while the API could not be reached: {exc}") from exc

    # -- the steps

    def _steps(self) -> dict[str, Any]:
        job, saved = self.job, self.saved
        job_dir = self.state.job_dir(job.id)
        out_dir = self.state.output_dir(job.id)

        if saved["phase"] == "claimed":
            self._wait_while_paused()
            if self.heartbeat.cancel_requested:
                return self._finish_canceled()
            try:
                inputs = self._held(
                    lambda: fetch_inputs(
                        job,
                        job_dir,
                        self.egress,
                        self._access,
                        lambda message: self.heartbeat.report(message=message),
                        pace=Pace(self.config.min_rate, self.config.stall_seconds),
                        stopping=self.stopping,
                    )
                )
            except InputError as exc:
                log.error("job %s: %s (%s)", job.id, exc, exc.detail)
                return self._finish_error(exc.code, str(exc))
            self._wait_while_paused()
            if self.heartbeat.cancel_requested:
                return self._finish_canceled()
            outcome = self._run_command(inputs, job_dir, out_dir)
            if outcome.canceled:
                return self._finish_canceled()
            if outcome.exit_code in SITE_FAULT_EXIT_CODES:
                raise SiteFault(
                    f"the command could not be run (exit status {outcome.exit_code}: a program it runs is "
                    "missing or not executable)"
                )
            # What the command finished, recorded before anything is sent: never lost from here on.
            saved.update(
                phase="ran",
                exit_code=outcome.exit_code,
                started_at=outcome.started_at,
                ended_at=outcome.ended_at,
                log_tail=outcome.log_tail,
                inputs=[str(p) for p in inputs],
            )
            saved.update(self._report(saved, out_dir))
            self.state.save(saved)

        if saved["phase"] == "ran":
            if "execution" not in saved:  # recorded by an agent from before reports were kept
                saved.update(self._report(saved, out_dir))
                self.state.save(saved)
            if saved["exit_code"] in SITE_FAULT_EXIT_CODES:
                saved["phase"] = "claimed"  # nothing ran: nothing finished to keep
                raise SiteFault(f"the command could not be run (exit status {saved['exit_code']})")
            self._wait_while_paused()
            succeeded = saved["exit_code"] == 0
            self.heartbeat.report(progress=100.0 if succeeded else None, message="registering the execution")
            try:
                execution = self._held(
                    lambda: self.api.create_execution(
                        job.id,
                        operation_id=self.operation_id,
                        **saved["execution"],
                        # Deterministic: a restart after a lost answer gets the same execution back.
                        idempotency_key=f"nmdc-site-execution:{self.operation_id}",
                    )
                )
            except Conflict as exc:
                raise OperationLost(f"posting the execution was refused: {exc.detail}") from exc
            except ValidationError as exc:
                # Retrying cannot help (e.g. an output the API refuses): end the attempt with the reason.
                return self._finish_error("INTERNAL", f"the execution was refused: {exc}")
            saved.update(phase="executed", execution_id=execution.id)
            self.state.save(saved)
            log.info("job %s: execution %s (%s)", job.id, execution.id, execution.status)

        self.summary["execution_id"] = saved["execution_id"]
        self._wait_while_paused()
        finish = saved.get("finish") or self._finish_of(saved["exit_code"])
        if "error" in finish:
            return self._finish_error(
                finish["error"]["code"],
                finish["error"]["message"],
                {"execution_id": saved["execution_id"], "exit_code": saved["exit_code"]},
            )
        try:
            operation = self._held(
                lambda: self.api.finish_operation(
                    self.operation_id,
                    execution_id=saved["execution_id"],
                    metadata={"progress": 100.0, "message": "succeeded"},
                )
            )
        except Conflict as exc:
            operation = self._ended_as_sent(
                lambda op: op.result is not None and op.result.id == saved["execution_id"]
            )
            if operation is None:
                raise OperationLost(f"finishing was refused: {exc.detail}") from exc
        self.state.clear()
        log.info("job %s done: operation %s %s", job.id, self.operation_id, operation.metadata.state)
        return {**self.summary, "state": operation.metadata.state}

    def _ended_as_sent(self, ours: Callable[[Operation], bool]) -> Operation | None:
        """The operation, when a finish refused as too late had in fact landed (its answer was lost and the
        retry found it done, as we said); else None."""
        try:
            operation = self.api.get_operation(self.operation_id)
        except ApiError:
            return None
        return operation if operation.done and ours(operation) else None

    @staticmethod
    def _finish_of(exit_code: int) -> dict[str, Any]:
        """How the operation is to be finished after the command exited with `exit_code`."""
        if exit_code == 0:
            return {"result": "execution"}
        return {"error": {"code": "COMMAND_FAILED", "message": f"the command exited with status {exit_code}"}}

    def _report(self, saved: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        """The execution to post and how to finish, for the state dir: what the command finished."""
        succeeded = saved["exit_code"] == 0
        execution = {
            "status": "succeeded" if succeeded else "failed",
            "started_at": saved["started_at"],
            "ended_at": saved["ended_at"],
            "outputs": self._outputs(out_dir) if succeeded else [],
            "details": self._details(saved),
        }
        return {"execution": execution, "finish": self._finish_of(saved["exit_code"])}

    def _access(self, resource: DataResource) -> tuple[str, dict[str, str]]:
        """Where to fetch an input that needs a grant, and the grant's headers (`inputs.Access`). Called from
        the download's own thread: with the claim's retry policy, given here."""
        try:
            with self.api.retry_policy(self.heartbeat.retry_policy()):
                grant = self.api.access(resource.id)
        except UNANSWERED:
            raise  # the API is failing, not refusing: retried while the lease lasts (`_held`)
        except ApiError as exc:
            raise InputUnavailable(
                f"input {resource.id} could not be fetched: the API gave no access grant for it",
                f"POST /data_resources/{resource.id}:access -> {exc.status_code}: {exc.detail}",
            ) from exc
        return grant.url, grant.headers

    def _details(self, saved: dict[str, Any]) -> dict[str, Any]:
        """The execution's details. Every token reads them: never the command line (it may carry secrets), and
        the output's last lines only when asked (`--publish-log-tail`), scrubbed of what looks like a secret."""
        details: dict[str, Any] = {
            "exit_code": saved["exit_code"],
            "inputs": [r.id for r in self.job.data_resources],
            "agent": AGENT,
        }
        if self.config.publish_log_tail:
            details["log_tail"] = scrub_lines(saved.get("log_tail", []))
        return details

    def _run_command(self, inputs: list[Path], job_dir: Path, out_dir: Path) -> CommandOutcome:
        env, progress_file = command_environment(self.job, self.operation_id, inputs, job_dir, out_dir)
        # `fetch_inputs` fetched `data_resources`, of which the inputs by role are some.
        paths = {resource.id: path for resource, path in zip(self.job.data_resources, inputs, strict=True)}
        roles = {
            role: paths[resource.id] for role, resource in self.job.inputs.items() if resource.id in paths
        }
        supervisor = Supervisor(
            command_argv(self.config.command, inputs, roles),
            env,
            job_dir,
            job_dir / "command.log",
            self.config.kill_grace,
        )
        self.heartbeat.report(progress=0.0, message="starting the command")
        return supervisor.run(self.heartbeat, progress_file, self.stopping)

    def _outputs(self, out_dir: Path) -> list[dict[str, Any]]:
        job = self.job
        data_type = (
            self.config.output_data_type or job.config.get("output_data_type") or f"{job.workflow_id}.output"
        )[:64]
        outputs: list[dict[str, Any]] = []
        if not out_dir.exists():
            return outputs
        for rel in published_files(out_dir):
            try:
                size, sums = digests(rel, root=out_dir)
            except OSError:
                log.warning("output %s was swapped for something else than a file; not published", rel)
                continue
            outputs.append(
                {
                    "name": rel.as_posix(),
                    "url": file_url(self.public_url, Path(job.id) / rel),
                    "data_type": data_type,
                    "size": size,
                    "checksums": [{"type": "sha256", "checksum": sums["sha256"]}],
                    "description": f"output of job {job.id} (workflow {job.workflow_id})",
                }
            )
        return outputs

    # -- ending with an error

    def _finish_canceled(self) -> dict[str, Any]:
        return {**self._finish_error("CANCELLED", "canceled on request"), "state": "canceled"}

    def _finish(self, error: dict[str, Any], message: str) -> Operation:
        return self._held(
            lambda: self.api.finish_operation(self.operation_id, error=error, metadata={"message": message})
        )

    def _finish_error(self, code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        error = {"code": code, "message": message, "details": details or {}}
        try:
            try:
                operation = self._finish(error, message)
            except ValidationError:
                # A server that only knows a fixed list of codes: say UNKNOWN and keep ours in the details.
                error = {**error, "code": "UNKNOWN", "details": {**(details or {}), "reason": code}}
                operation = self._finish(error, message)
            state = operation.metadata.state
        except Conflict as exc:
            landed = self._ended_as_sent(lambda op: op.error is not None and op.error.code == error["code"])
            if landed is not None:
                state = landed.metadata.state
            else:
                # Already ended (an admin's cancel, a lapsed lease): nothing of ours to record.
                log.warning("could not finish operation %s: %s", self.operation_id, exc.detail)
                state = "lost"
        self.state.clear()
        log.info("job %s ended: %s (%s)", self.job.id, code, message)
        return {**self.summary, "state": state, "error": error}
