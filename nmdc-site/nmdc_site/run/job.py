"""One claimed job, carried through its remaining steps: inputs, the command, the execution, the outcome.

The steps are recorded in the state dir (``claimed`` -> ``ran`` -> ``executed``) so that a restarted agent
carries on where it stopped: inputs already downloaded and verified are kept, a command that had finished is
not run again, an execution already posted is not posted again (and its POST uses a deterministic
``Idempotency-Key`` in case the answer was lost). A command interrupted by the crash is run again.

Outcomes: exit status 0 posts a ``succeeded`` execution with the outputs and finishes the operation with it;
any other status posts a ``failed`` execution and finishes with an error; a bad input (``DATA_LOSS``,
``UNAVAILABLE``) or a cancel request (``CANCELLED``) finishes with an error and no execution.
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
    Conflict,
    DataResource,
    Forbidden,
    Job,
    NmdcClient,
    NotFound,
    Operation,
    ServerError,
    TransportError,
    ValidationError,
)
from nmdc_site.files import digests, file_url, published_files
from nmdc_site.run.command import CommandOutcome, Supervisor, command_argv, command_environment
from nmdc_site.run.config import RunConfig
from nmdc_site.run.egress import Egress
from nmdc_site.run.errors import Interrupted, LeaseRanOut, OperationLost
from nmdc_site.run.heartbeat import Heartbeat
from nmdc_site.run.inputs import InputError, InputUnavailable, fetch_inputs
from nmdc_site.run.scrub import scrub_lines
from nmdc_site.run.state import StateDir

log = logging.getLogger("nmdc_site.run")

AGENT = f"nmdc-site/{__version__}"

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

        Raises `LeaseRanOut` (the claim stays recorded) and `Interrupted` (likewise).
        """
        heartbeat = self.heartbeat
        # Every request made while the claim is held is retried for as long as the lease lasts.
        with self.api.retry_policy(heartbeat.retry_policy()):
            try:
                heartbeat.beat()  # renew now: a resumed claim may be close to its end
                heartbeat.start()
                return self._steps()
            except LeaseRanOut:
                raise
            except OperationLost as exc:
                log.warning("job %s: %s; dropping it", self.job.id, exc)
                self.state.clear()
                return {**self.summary, "state": "lost", "reason": str(exc)}
            finally:
                heartbeat.stop()

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
        except (TransportError, ServerError) as exc:
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
            saved.update(
                phase="ran",
                exit_code=outcome.exit_code,
                started_at=outcome.started_at,
                ended_at=outcome.ended_at,
                log_tail=outcome.log_tail,
                inputs=[str(p) for p in inputs],
            )
            self.state.save(saved)

        if saved["phase"] == "ran":
            self._wait_while_paused()
            succeeded = saved["exit_code"] == 0
            self.heartbeat.report(progress=100.0 if succeeded else None, message="registering the execution")
            outputs = self._outputs(out_dir) if succeeded else []
            try:
                execution = self._held(
                    lambda: self.api.create_execution(
                        job.id,
                        operation_id=self.operation_id,
                        status="succeeded" if succeeded else "failed",
                        started_at=saved["started_at"],
                        ended_at=saved["ended_at"],
                        outputs=outputs,
                        details=self._details(saved),
                        # Deterministic: a restart after a lost answer gets the same execution back.
                        idempotency_key=f"nmdc-site-execution:{self.operation_id}",
                    )
                )
            except (Conflict, Forbidden, NotFound) as exc:
                raise OperationLost(f"posting the execution was refused: {exc.detail}") from exc
            except ValidationError as exc:
                # Retrying cannot help (e.g. an output the API refuses): end the attempt with the reason.
                return self._finish_error("INTERNAL", f"the execution was refused: {exc}")
            saved.update(phase="executed", execution_id=execution.id)
            self.state.save(saved)
            log.info("job %s: execution %s (%s)", job.id, execution.id, execution.status)

        self.summary["execution_id"] = saved["execution_id"]
        self._wait_while_paused()
        if saved["exit_code"] == 0:
            try:
                operation = self._held(
                    lambda: self.api.finish_operation(
                        self.operation_id,
                        execution_id=saved["execution_id"],
                        metadata={"progress": 100.0, "message": "succeeded"},
                    )
                )
            except (Conflict, Forbidden, NotFound) as exc:
                raise OperationLost(f"finishing was refused: {exc.detail}") from exc
            self.state.clear()
            log.info("job %s done: operation %s %s", job.id, self.operation_id, operation.metadata.state)
            return {**self.summary, "state": operation.metadata.state}
        return self._finish_error(
            "UNKNOWN",
            f"the command exited with status {saved['exit_code']}",
            {"execution_id": saved["execution_id"], "exit_code": saved["exit_code"]},
        )

    def _access(self, resource: DataResource) -> tuple[str, dict[str, str]]:
        """Where to fetch an input that needs a grant, and the grant's headers (`inputs.Access`)."""
        try:
            grant = self.api.access(resource.id)
        except ServerError:
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
        except (Conflict, NotFound, Forbidden) as exc:
            # Already ended (an admin's cancel, a lapsed lease): nothing of ours to record.
            log.warning("could not finish operation %s: %s", self.operation_id, exc.detail)
            state = "lost"
        self.state.clear()
        log.info("job %s ended: %s (%s)", self.job.id, code, message)
        return {**self.summary, "state": state, "error": error}
