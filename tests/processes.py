"""Real processes for the tests that need them: a live API on this run's database, and how to stop it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from nmdc_runtime.config import Settings
from nmdc_runtime.processes import free_port, stop_group, wait_for

__all__ = ["BIN", "REPO", "ApiURL", "free_port", "live_api", "runtime_env", "stop_group", "wait_for"]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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


class ApiURL(str):
    """A live API's base URL, which also knows the pid of the process serving it."""

    pid: int


@contextlib.contextmanager
def live_api(settings: Settings, home: Path, workers: int = 1, **env: str) -> Iterator[ApiURL]:
    """`uvicorn api.main:app` (with `--workers` when more than one) on a free port (log in `home/api.log`);
    yields its base URL (with `.pid`), then stops it."""
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
    url = ApiURL(f"http://127.0.0.1:{port}")
    url.pid = proc.pid

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
