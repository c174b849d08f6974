"""What the agent remembers across restarts: the job in hand and how far it got, in the state dir.

``current.json`` records the claimed job, its operation and its step (``claimed`` -> ``ran`` ->
``executed``); from ``ran`` on, also what the command finished: the execution to post and how to finish the
operation, so that a restart sends them as they were. ``jobs/<job_id>/`` holds the job's inputs, config,
progress file and command log; ``outputs/<job_id>/`` the outputs the agent serves.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


class StateDir:
    """``current.json`` (the job in hand), ``jobs/<job_id>/`` (inputs, config, log), ``outputs/<job_id>/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.outputs_root = self.root / "outputs"
        self.outputs_root.mkdir(exist_ok=True)
        self._current = self.root / "current.json"

    def check_writable(self) -> None:
        """OSError unless a file can be written (and removed) where the agent writes: the state dir, the jobs'
        folders and the outputs' folder."""
        for folder in (self.root, self.root / "jobs", self.outputs_root):
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-check-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()

    def load(self) -> dict[str, Any] | None:
        """The recorded claim, or None."""
        try:
            return json.loads(self._current.read_text())
        except FileNotFoundError:
            return None

    def save(self, state: dict[str, Any]) -> None:
        """Record the claim and its step."""
        # Write-then-rename: a crash leaves the old state or the new one, never half of one.
        # Flushed to the disk before the rename: what the command finished must survive a crash of the host.
        tmp = self._current.with_suffix(".json.tmp")
        with tmp.open("w") as handle:
            handle.write(json.dumps(state, indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._current)

    def clear(self) -> None:
        """Forget the claim: the job is done with, one way or another."""
        with contextlib.suppress(FileNotFoundError):
            self._current.unlink()

    def job_dir(self, job_id: str) -> Path:
        path = self.root / "jobs" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output_dir(self, job_id: str) -> Path:
        return self.outputs_root / job_id
