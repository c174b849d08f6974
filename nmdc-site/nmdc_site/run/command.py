"""The site's command: how it is called (argv, environment, folders) and how it is supervised while it runs
(its own process group; stopped on cancel, suspended while paused, killed with the agent).

A command that cannot be run at all (its executable missing or not executable, or exit status 126 or 127,
which a shell uses for those) is the site's own fault (`SiteFault`); any other non-zero exit status is the
command's failure (COMMAND_FAILED)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from nmdc_site.client import Job
from nmdc_site.run.errors import Interrupted, SiteFault
from nmdc_site.run.heartbeat import Heartbeat

log = logging.getLogger("nmdc_site.run")

LOG_TAIL_LINES = 20
STOP_GRACE = 2.0
"""Seconds the command gets between SIGTERM and SIGKILL when the agent itself stops (Ctrl-C, SIGTERM): the
agent promises to be gone within 5 s."""
SITE_FAULT_EXIT_CODES = frozenset({126, 127})
"""Exit statuses that say the command could not be run at all (a shell's "not executable", "not found"): the
site's own fault, not the job's."""


def executable(command: list[str]) -> str:
    """The path of the command's executable, as `PATH` resolves it; `SiteFault` when it is missing or not
    executable (checked before any claim, and again when the command starts)."""
    if not command or command[0] == "{inputs}":
        raise SiteFault("no command to run: give it after --")
    name = command[0]
    found = shutil.which(name)
    if found is not None:
        return found
    path = Path(name)
    if os.sep in name and path.exists():
        why = "is not a file" if not path.is_file() else "is not executable"
        raise SiteFault(f"the command's executable {name} {why}")
    where = "does not exist" if os.sep in name else "is not found on PATH"
    raise SiteFault(f"the command's executable {name} {where}")


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


ROLE_FIELD = re.compile(r"\{inputs\.([A-Za-z_][A-Za-z0-9_]*)\}")
"""``{inputs.ROLE}`` in an argument: the local path of the job's input of that role."""


def command_argv(
    command: list[str], inputs: list[Path], roles: Mapping[str, Path] | None = None
) -> list[str]:
    """The argv to run: an argument ``{inputs}`` replaced by the input paths, and ``{inputs.ROLE}`` within an
    argument by the path of the input of that role (`roles`); an argument naming a role the job has no input
    for (an optional one its group lacked) is left out. With neither, the paths are appended."""
    paths = [str(p) for p in inputs]
    roles = roles or {}
    if "{inputs}" not in command and not any(ROLE_FIELD.search(arg) for arg in command):
        return [*command, *paths]
    argv: list[str] = []
    for arg in command:
        if arg == "{inputs}":
            argv.extend(paths)
        elif all(role in roles for role in ROLE_FIELD.findall(arg)):
            argv.append(ROLE_FIELD.sub(lambda m: str(roles[m.group(1)]), arg))
    return argv


def command_environment(
    job: Job, operation_id: str, inputs: list[Path], job_dir: Path, out_dir: Path
) -> tuple[dict[str, str], Path]:
    """The command's environment, and its progress file; prepares the folders the environment names."""
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
    return env, progress_file


def read_progress(path: Path) -> tuple[float | None, str | None]:
    """The last ``<percent> <message>`` line the command wrote to its progress file."""
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

    def _terminate(self, proc: subprocess.Popen, grace: float) -> None:
        self._signal(proc, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self._signal(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGKILL)
            proc.wait()

    def run(self, heartbeat: Heartbeat, progress_file: Path, stopping: threading.Event) -> CommandOutcome:
        """Run the command to its end (or until a cancel, a lost lease or the agent's stop).

        `SiteFault` when it cannot be started at all (its executable missing or not executable).
        """
        started = now_rfc3339()
        log.info("running %s", " ".join(self.argv))
        with self.log_path.open("a") as sink:
            try:
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
            except OSError as exc:  # not found, not executable, not a program: exec failed
                raise SiteFault(
                    f"the command could not be started: {exc.strerror or exc}",
                    f"{self.argv[0]}: {exc}",
                ) from exc
            pump = threading.Thread(target=self._pump, args=(proc, sink), daemon=True)
            pump.start()
            stopped = canceled = False
            t0 = time.monotonic()
            grace = self.grace
            try:
                while proc.poll() is None:
                    if stopping.is_set():
                        grace = min(self.grace, STOP_GRACE)
                        raise Interrupted()
                    if heartbeat.lost:
                        raise heartbeat.lost
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
                    progress, message = read_progress(progress_file)
                    elapsed = int(time.monotonic() - t0)
                    heartbeat.report(
                        progress=progress,
                        # Not argv[0]: the operation is public, and the command line may name secrets.
                        message=message or f"{'paused' if stopped else 'running'} the command ({elapsed} s)",
                    )
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    self._terminate(proc, grace)
                pump.join(1 if stopping.is_set() else 5)
        return CommandOutcome(
            exit_code=None if canceled else proc.returncode,
            started_at=started,
            ended_at=now_rfc3339(),
            log_tail=list(self.tail),
            canceled=canceled,
        )
