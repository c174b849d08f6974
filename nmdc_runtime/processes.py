"""Local process plumbing shared by `make dev`, `make demo`, the benchmarks and the tests."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """The first truthy value of `predicate()`, polled until `timeout` seconds; TimeoutError after that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_group(
    proc: subprocess.Popen, timeout: float = 20.0, name: str | None = None, *, leader_first: bool = False
) -> None:
    """SIGTERM a process started with `start_new_session=True` and its whole group; SIGKILL after `timeout`.

    The group, not the process: `dagster dev` and `uvicorn --workers` have children of their own, and
    whatever of the group outlives its leader is killed too. `leader_first`: SIGTERM the leader alone, for one
    that stops its children itself and would restart one that stopped under it (`dagster dev` restarts its
    code server).
    """
    label = name or str(proc.pid)
    if proc.poll() is None:
        log.info("stopping %s", label)
    with contextlib.suppress(ProcessLookupError):
        if leader_first:
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in %.0f s; killing it", label, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
