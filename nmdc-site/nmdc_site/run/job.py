"""`nmdc-site run`: an executing site. Claim a job, fetch its inputs, run a command, report what happened.

How the command is run (the contract with the site's own code):

* argv: the COMMAND given after ``--``. An argument that is exactly ``{inputs}`` is replaced by the local paths
  of the job's inputs (one argument each, in the order of ``job.config.data_resources``); without such an
  argument the paths are appended at the end.
* environment, on top of the agent's own:

  - ``NMDC_JOB_ID``, ``NMDC_OPERATION_ID``, ``NMDC_WORKFLOW_ID``;
  - ``NMDC_JOB_CONFIG``: path of a JSON file holding the job's ``config`` (workflow config + data resources);
  - ``NMDC_INPUTS``: a JSON list of the inputs' absolute local paths (same order as above);
  - ``NMDC_OUTPUT_DIR``: an empty folder; every file written there (except dot-files and ``*.part``/``*.tmp``)
    becomes an output of the execution, registered as a data resource of this site and served by the agent;
  - ``NMDC_PROGRESS_FILE``: optional; write lines ``<percent> <message>`` to it and the last one is reported as
    the operation's ``progress`` and ``message`` on the next heartbeat.
* working directory: the job's folder under the state dir; stdout and stderr go to ``command.log`` there and
  to the agent's stderr; the last lines end up in the execution's ``details``.
* exit status 0 is success; anything else posts a ``failed`` execution and finishes the operation with an error.

While the command runs the agent renews the lease (PATCH /operations/{id}) with progress at a third of the
lease (at most every 30 s). When the answer says ``cancel_requested`` the command's process group gets SIGTERM
(SIGKILL after a grace period) and the operation ends with error ``CANCELLED``. When it says ``paused`` the
command is stopped with SIGSTOP and continued with SIGCONT on resume; the agent does not move to its next step
while paused.

Restarts: the state dir's ``current.json`` records the claimed job, its operation and how far the work got
(``claimed`` -> ``ran`` -> ``executed``). On start the agent re-claims that job first (a holder's repeated claim
returns the same operation; after a lapsed lease it gets a new one) and continues from the recorded step:
inputs already downloaded and verified are kept, a command that had finished is not run again, an execution
already posted is not posted again (and its POST uses a deterministic ``Idempotency-Key`` in case the answer
was lost). A command interrupted by the crash is run again from the start.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import tenacity
from tqdm import tqdm

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
from nmdc_site.files import CHUNK, digests, file_url, published_files

log = logging.getLogger("nmdc_site.run")

AGENT = "nmdc-site/0.1"
SUPPORTED_DIGESTS = ("sha256", "md5")
LOG_TAIL_LINES = 20


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class InputError(Exception):
    """An input is not what the job says (size or checksum mismatch): error code DATA_LOSS."""

    code = "DATA_LOSS"


class InputUnavailable(InputError):
    """An input could not be fetched (connection refused, an HTTP error status): error code UNAVAILABLE."""

    code = "UNAVAILABLE"


class OperationLost(Exception):
    """The operation ended or moved elsewhere (lease lapsed, admin cancel): our work no longer counts."""


class Interrupted(Exception):
    """The agent itself was asked to stop (Ctrl-C, SIGTERM); the claim is kept for the next start."""


@dataclass
class RunConfig:
    """What `nmdc-site run` was told."""

    workflow_id: str
    command: list[str]
    state_dir: Path
    bind: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None
    poll_interval: float = 5.0
    heartbeat_interval: float | None = None
    output_data_type: str | None = None
    kill_grace: float = 10.0
    once: bool = False


# ---- the state dir --------------------------------------------------------------------------------------


class StateDir:
    """``current.json`` (the job in hand), ``jobs/<job_id>/`` (inputs, config, log), ``outputs/<job_id>/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.outputs_root = self.root / "outputs"
        self.outputs_root.mkdir(exist_ok=True)
        self._current = self.root / "current.json"

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._current.read_text())
        except FileNotFoundError:
            return None

    def save(self, state: dict[str, Any]) -> None:
        # Write-then-rename: a crash leaves the old state or the new one, never half of one.
        tmp = self._current.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self._current)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._current.unlink()

    def job_dir(self, job_id: str) -> Path:
        path = self.root / "jobs" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output_dir(self, job_id: str) -> Path:
        return self.outputs_root / job_id


# ---- the heartbeat --------------------------------------------------------------------------------------


class Heartbeat(threading.Thread):
    """Renews the lease every `interval` seconds, reporting progress; learns of cancel and pause requests."""

    def __init__(self, api: NmdcClient, operation: Operation, interval: float) -> None:
        super().__init__(name=f"heartbeat-{operation.id}", daemon=True)
        self.api = api
        self.operation_id = operation.id
        self.interval = interval
        self.progress: float | None = None
        self.message: str | None = None
        self.cancel_requested = operation.metadata.cancel_requested
        self.paused = operation.metadata.paused
        self.lost: str | None = None
        self._stop_event = threading.Event()
        self.beats = 0

    def report(self, progress: float | None = None, message: str | None = None) -> None:
        if progress is not None:
            self.progress = progress
        if message is not None:
            self.message = message

    def beat(self) -> None:
        """One PATCH; errors other than losing the operation are logged and retried on the next beat."""
        try:
            operation = self.api.heartbeat(self.operation_id, progress=self.progress, message=self.message)
        except (Conflict, NotFound, Forbidden) as exc:
            self.lost = f"the operation is no longer ours: {exc.detail}"
            return
        except (TransportError, ServerError) as exc:
            log.warning("heartbeat failed (will retry): %s", exc)
            return
        self.beats += 1
        self.cancel_requested = operation.metadata.cancel_requested
        self.paused = operation.metadata.paused
        if operation.done:
            self.lost = f"the operation ended as {operation.metadata.state}"

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.beat()
            if self.lost:
                return

    def stop(self) -> None:
        self._stop_event.set()


def heartbeat_interval(operation: Operation, configured: float | None) -> float:
    """A third of the remaining lease, between 0.5 and 30 s, unless configured."""
    if configured:
        return configured
    lease = operation.metadata.lease_expire_time
    if lease is None:
        return 30.0
    remaining = (lease - datetime.now(UTC)).total_seconds()
    return max(0.5, min(30.0, remaining / 3))


# ---- inputs ---------------------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    base = Path(name).name or "data"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in base).lstrip(".") or "data"


def verify(path: Path, resource: DataResource) -> None:
    """Raise `InputError` unless the file has the resource's size and every supported checksum."""
    expected = {c.type: c.checksum.lower() for c in resource.checksums if c.type in SUPPORTED_DIGESTS}
    size, actual = digests(path, tuple(expected) or ("sha256",))
    if size != resource.size:
        raise InputError(f"size mismatch for {resource.url}: expected {resource.size} bytes, got {size}")
    for kind, value in expected.items():
        if actual[kind] != value:
            raise InputError(f"{kind} mismatch for {resource.url}: expected {value}, got {actual[kind]}")


def download(resource: DataResource, dest: Path, heartbeat: Heartbeat | None = None) -> None:
    """Fetch a resource to `dest` (through a ``.part`` file), with a progress bar; retries connection errors."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_exponential_jitter(initial=0.5, max=5),
        retry=tenacity.retry_if_exception_type(httpx.TransportError),
        reraise=True,
    )
    def fetch() -> None:
        with (
            httpx.stream("GET", resource.url, follow_redirects=True, timeout=60) as response,
            part.open("wb") as handle,
            tqdm(
                total=resource.size or None,
                unit="B",
                unit_scale=True,
                desc=resource.name[-30:],
                disable=None,
                file=sys.stderr,
            ) as bar,
        ):
            if response.status_code != 200:
                raise InputUnavailable(f"GET {resource.url} -> {response.status_code}")
            done = 0
            for chunk in response.iter_bytes(CHUNK):
                handle.write(chunk)
                bar.update(len(chunk))
                done += len(chunk)
                if heartbeat:
                    heartbeat.report(message=f"downloading {resource.name}: {done}/{resource.size} bytes")

    try:
        fetch()
    except httpx.HTTPError as exc:
        raise InputUnavailable(f"could not fetch {resource.url}: {exc}") from exc
    os.replace(part, dest)


def fetch_inputs(job: Job, job_dir: Path, heartbeat: Heartbeat | None = None) -> list[Path]:
    """Every input of the job, downloaded and verified; inputs already here and intact are kept."""
    paths = []
    for resource in job.data_resources:
        path = job_dir / "inputs" / resource.id / _safe_name(resource.name)
        if path.exists():
            try:
                verify(path, resource)
                log.info("input %s already here and intact", resource.id)
                paths.append(path)
                continue
            except InputError:
                path.unlink()
        log.info("downloading %s from %s", resource.id, resource.url)
        download(resource, path, heartbeat)
        try:
            verify(path, resource)
        except InputError:
            # Keep the evidence out of the way of the next attempt.
            os.replace(path, path.with_name(path.name + ".rejected"))
            raise
        paths.append(path)
    return paths


# ---- the command ----------------------------------------------------------------------------------------


def command_argv(command: list[str], inputs: list[Path]) -> list[str]:
    """The argv to run: ``{inputs}`` replaced by the input paths, or the paths appended."""
    paths = [str(p) for p in inputs]
    if "{inputs}" in command:
        argv: list[str] = []
        for arg in command:
            argv.extend(paths if arg == "{inputs}" else [arg])
        return argv
    return [*command, *paths]


def _die_with_parent() -> None:
    # Linux only: the command gets SIGTERM if the agent dies, so a crashed agent leaves no orphan running
    # unsupervised (the restarted agent runs it again).
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class CommandOutcome:
    exit_code: int | None
    started_at: str
    ended_at: str
    log_tail: list[str] = field(default_factory=list)
    canceled: bool = False


class Supervisor:
    """Runs the command in its own process group and obeys the heartbeat: cancel, pause, lost lease."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, grace: float) -> None:
        self.argv, self.env, self.cwd, self.log_path, self.grace = argv, env, cwd, log_path, grace
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)

    def _pump(self, proc: subprocess.Popen, sink) -> None:
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            sink.write(line)
            sink.flush()
            sys.stderr.write(f"  | {line}")
            self.tail.append(line.rstrip("\n"))

    def _signal(self, proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def _terminate(self, proc: subprocess.Popen) -> None:
        self._signal(proc, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self._signal(proc, signal.SIGTERM)
        try:
            proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGKILL)
            proc.wait()

    def run(self, heartbeat: Heartbeat, progress_file: Path, stopping: threading.Event) -> CommandOutcome:
        started = now_rfc3339()
        log.info("running %s", " ".join(self.argv))
        with self.log_path.open("a") as sink:
            proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            pump = threading.Thread(target=self._pump, args=(proc, sink), daemon=True)
            pump.start()
            stopped = canceled = False
            t0 = time.monotonic()
            try:
                while proc.poll() is None:
                    if stopping.is_set():
                        raise Interrupted()
                    if heartbeat.lost:
                        raise OperationLost(heartbeat.lost)
                    if heartbeat.cancel_requested:
                        log.info("cancel requested: stopping the command")
                        canceled = True
                        break
                    if heartbeat.paused and not stopped:
                        log.info("operation paused: stopping the command (SIGSTOP)")
                        self._signal(proc, signal.SIGSTOP)
                        stopped = True
                    elif stopped and not heartbeat.paused:
                        log.info("operation resumed: continuing the command (SIGCONT)")
                        self._signal(proc, signal.SIGCONT)
                        stopped = False
                    progress, message = _read_progress(progress_file)
                    elapsed = int(time.monotonic() - t0)
                    heartbeat.report(
                        progress=progress,
                        message=message
                        or f"{'paused' if stopped else 'running'} {self.argv[0]} ({elapsed} s)",
                    )
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    self._terminate(proc)
                pump.join(5)
        return CommandOutcome(
            exit_code=None if canceled else proc.returncode,
            started_at=started,
            ended_at=now_rfc3339(),
            log_tail=list(self.tail),
            canceled=canceled,
        )


def _read_progress(path: Path) -> tuple[float | None, str | None]:
    try:
        lines = path.read_text().strip().splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return None, None
    if not lines:
        return None, None
    head, _, rest = lines[-1].partition(" ")
    try:
        return max(0.0, min(100.0, float(head))), rest.strip() or None
    except ValueError:
        return None, lines[-1].strip()


# ---- the agent ------------------------------------------------------------------------------------------


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

    # -- finding work

    def _next_job(self) -> tuple[Job, Operation] | None:
        for job in self.api.list_jobs(claimable=True, workflow_id=self.config.workflow_id):
            if job.id in self.failed_here:
                continue
            try:
                claim = self.api.claim_job(job.id)
            except (Conflict, Forbidden, NotFound) as exc:
                log.info("could not claim %s: %s", job.id, exc.detail)
                continue
            log.info("claimed job %s: operation %s", job.id, claim.operation.id)
            return job, claim.operation
        return None

    def _resume(self, saved: dict[str, Any]) -> tuple[Job, Operation] | None:
        job_id = saved["job_id"]
        try:
            claim = self.api.claim_job(job_id)
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
        return self.api.get_job(job_id), claim.operation

    def run(self) -> int:
        """Handle jobs until stopped (or one job with `once`); returns a process exit status."""
        while not self.stopping.is_set():
            saved = self.state.load()
            try:
                found = self._resume(saved) if saved else None
                if found is None and saved is None:
                    found = self._next_job()
            except (TransportError, ServerError) as exc:
                # The API is down or failing: the claim (if any) is still recorded; try again later.
                log.warning("API unavailable: %s", exc)
                self.stopping.wait(self.config.poll_interval)
                continue
            if found is None:
                if saved is not None:
                    continue  # the saved job was dropped; look for new work right away
                self.stopping.wait(self.config.poll_interval)
                continue
            job, operation = found
            if saved is None:
                saved = {
                    "job_id": job.id,
                    "operation_id": operation.id,
                    "workflow_id": job.workflow_id,
                    "phase": "claimed",
                }
                self.state.save(saved)
            try:
                outcome = self.handle(job, operation, saved)
            except Interrupted:
                log.info("stopping; job %s stays claimed and resumes on the next start", job.id)
                return 130
            self.handled.append(outcome)
            if self.config.once:
                return 0 if outcome.get("state") == "succeeded" else 1
        return 0

    # -- one job

    def handle(self, job: Job, operation: Operation, saved: dict[str, Any]) -> dict[str, Any]:
        """Carry a claimed job through its remaining steps; returns a summary for the log and the tests."""
        heartbeat = Heartbeat(
            self.api, operation, heartbeat_interval(operation, self.config.heartbeat_interval)
        )
        heartbeat.beat()  # renew now: a resumed claim may be close to its end
        heartbeat.start()
        try:
            return self._steps(job, operation.id, saved, heartbeat)
        except OperationLost as exc:
            log.warning("job %s: %s; dropping it", job.id, exc)
            self.state.clear()
            return {"job_id": job.id, "operation_id": operation.id, "state": "lost", "reason": str(exc)}
        finally:
            heartbeat.stop()

    def _wait_while_paused(self, heartbeat: Heartbeat) -> None:
        announced = False
        while heartbeat.paused and not heartbeat.cancel_requested:
            if not announced:
                log.info("operation paused; waiting")
                announced = True
            self._check(heartbeat)
            heartbeat.report(message="paused")
            time.sleep(0.2)

    def _check(self, heartbeat: Heartbeat) -> None:
        if self.stopping.is_set():
            raise Interrupted()
        if heartbeat.lost:
            raise OperationLost(heartbeat.lost)

    def _steps(
        self, job: Job, operation_id: str, saved: dict[str, Any], heartbeat: Heartbeat
    ) -> dict[str, Any]:
        job_dir = self.state.job_dir(job.id)
        out_dir = self.state.output_dir(job.id)
        summary: dict[str, Any] = {"job_id": job.id, "operation_id": operation_id}

        if saved["phase"] == "claimed":
            self._wait_while_paused(heartbeat)
            self._check(heartbeat)
            if heartbeat.cancel_requested:
                return self._finish_canceled(summary, operation_id, job.id)
            try:
                inputs = fetch_inputs(job, job_dir, heartbeat)
            except InputError as exc:
                log.error("job %s: %s", job.id, exc)
                return self._finish_error(summary, operation_id, job.id, exc.code, str(exc))
            self._wait_while_paused(heartbeat)
            self._check(heartbeat)
            if heartbeat.cancel_requested:
                return self._finish_canceled(summary, operation_id, job.id)
            outcome = self._run_command(job, operation_id, inputs, job_dir, out_dir, heartbeat)
            if outcome.canceled:
                return self._finish_canceled(summary, operation_id, job.id)
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
            self._wait_while_paused(heartbeat)
            self._check(heartbeat)
            succeeded = saved["exit_code"] == 0
            heartbeat.report(progress=100.0 if succeeded else None, message="registering the execution")
            outputs = self._outputs(job, out_dir) if succeeded else []
            try:
                execution = self.api.create_execution(
                    job.id,
                    operation_id=operation_id,
                    status="succeeded" if succeeded else "failed",
                    started_at=saved["started_at"],
                    ended_at=saved["ended_at"],
                    outputs=outputs,
                    details={
                        "exit_code": saved["exit_code"],
                        "command": self.config.command,
                        "inputs": [r.id for r in job.data_resources],
                        "log_tail": saved.get("log_tail", []),
                        "agent": AGENT,
                    },
                    # Deterministic: a restart after a lost answer gets the same execution back.
                    idempotency_key=f"nmdc-site-execution:{operation_id}",
                )
            except (Conflict, Forbidden, NotFound) as exc:
                raise OperationLost(f"posting the execution was refused: {exc.detail}") from exc
            except ValidationError as exc:
                # Retrying cannot help (e.g. an output the API refuses): end the attempt with the reason.
                return self._finish_error(
                    summary, operation_id, job.id, "INTERNAL", f"the execution was refused: {exc}"
                )
            saved.update(phase="executed", execution_id=execution.id)
            self.state.save(saved)
            log.info("job %s: execution %s (%s)", job.id, execution.id, execution.status)

        summary["execution_id"] = saved["execution_id"]
        self._wait_while_paused(heartbeat)
        self._check(heartbeat)
        if saved["exit_code"] == 0:
            try:
                operation = self.api.finish_operation(
                    operation_id,
                    execution_id=saved["execution_id"],
                    metadata={"progress": 100.0, "message": "succeeded"},
                )
            except (Conflict, Forbidden, NotFound) as exc:
                raise OperationLost(f"finishing was refused: {exc.detail}") from exc
            self.state.clear()
            log.info("job %s done: operation %s %s", job.id, operation_id, operation.metadata.state)
            return {**summary, "state": operation.metadata.state}
        return self._finish_error(
            summary,
            operation_id,
            job.id,
            "UNKNOWN",
            f"the command exited with status {saved['exit_code']}",
            {"execution_id": saved["execution_id"], "exit_code": saved["exit_code"]},
        )

    def _run_command(
        self,
        job: Job,
        operation_id: str,
        inputs: list[Path],
        job_dir: Path,
        out_dir: Path,
        heartbeat: Heartbeat,
    ) -> CommandOutcome:
        # A rerun after a crash starts from an empty output folder: no half-written leftovers become outputs.
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        config_path = job_dir / "job_config.json"
        config_path.write_text(json.dumps(job.config, indent=2))
        progress_file = job_dir / "progress"
        progress_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(
            NMDC_JOB_ID=job.id,
            NMDC_OPERATION_ID=operation_id,
            NMDC_WORKFLOW_ID=job.workflow_id,
            NMDC_JOB_CONFIG=str(config_path),
            NMDC_INPUTS=json.dumps([str(p) for p in inputs]),
            NMDC_OUTPUT_DIR=str(out_dir),
            NMDC_PROGRESS_FILE=str(progress_file),
        )
        # The site's own credentials are not the command's business.
        env.pop("NMDC_CLIENT_SECRET", None)
        supervisor = Supervisor(
            command_argv(self.config.command, inputs),
            env,
            job_dir,
            job_dir / "command.log",
            self.config.kill_grace,
        )
        heartbeat.report(progress=0.0, message="starting the command")
        return supervisor.run(heartbeat, progress_file, self.stopping)

    def _outputs(self, job: Job, out_dir: Path) -> list[dict[str, Any]]:
        data_type = (
            self.config.output_data_type or job.config.get("output_data_type") or f"{job.workflow_id}.output"
        )[:64]
        outputs = []
        if not out_dir.exists():
            return outputs
        for rel in published_files(out_dir):
            size, sums = digests(out_dir / rel)
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

    def _finish_canceled(self, summary: dict[str, Any], operation_id: str, job_id: str) -> dict[str, Any]:
        return {
            **self._finish_error(summary, operation_id, job_id, "CANCELLED", "canceled on request"),
            "state": "canceled",
        }

    def _finish_error(
        self,
        summary: dict[str, Any],
        operation_id: str,
        job_id: str,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        error = {"code": code, "message": message, "details": details or {}}
        state = "failed"
        try:
            try:
                operation = self.api.finish_operation(
                    operation_id, error=error, metadata={"message": message}
                )
            except ValidationError:
                # A server that only knows a fixed list of codes: say UNKNOWN and keep ours in the details.
                error = {**error, "code": "UNKNOWN", "details": {**(details or {}), "reason": code}}
                operation = self.api.finish_operation(
                    operation_id, error=error, metadata={"message": message}
                )
            state = operation.metadata.state
        except (Conflict, NotFound, Forbidden) as exc:
            # Already ended (an admin's cancel, a lapsed lease): nothing of ours to record.
            log.warning("could not finish operation %s: %s", operation_id, exc.detail)
            state = "lost"
        except ApiError:
            raise
        self.state.clear()
        if code != "CANCELLED":
            self.failed_here.add(job_id)
        log.info("job %s ended: %s (%s)", job_id, code, message)
        return {**summary, "state": state, "error": error}
