"""Real processes for the tests that need them: a live API on this run's database, and how to stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from nmdc_runtime.config import Settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """The first truthy value of `predicate()`, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left of it after `timeout`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    # Children (a code server, uvicorn workers) may outlive the leader: kill the group in any case.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def runtime_env(settings: Settings, home: Path, **overrides: str) -> dict[str, str]:
    """The environment of a runtime process on this run's databases, with its own NMDC_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        NMDC_HOME=str(home),
        NMDC_DATABASE_URL=settings.database_url,
        NMDC_DAGSTER_DATABASE_URL=settings.dagster_database_url,
        NMDC_JWT_SECRET=settings.jwt_secret.get_secret_value(),
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def live_api(settings: Settings, home: Path, workers: int = 1, **env: str) -> Iterator[str]:
    """`uvicorn api.main:app` (with `--workers` when more than one) on a free port (log in `home/api.log`);
    yields its base URL, then stops it."""
    port = free_port()
    environment = runtime_env(settings, home, **env)
    log_path = home / "api.log"
    # A file, not a pipe: nobody reads a pipe while the test runs, and a full one would block the server.
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
            + (["--workers", str(workers)] if workers > 1 else []),
            cwd=REPO,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, f"the API exited: {log_path.read_text(errors='replace')}"
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 90, f"the API at {url}")
        yield url
    finally:
        stop_group(proc)
