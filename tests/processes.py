"""Real processes for the tests that need them: a live API and a live Dagster (`dagster dev`) on this run's
databases, and how to stop them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from nmdc_runtime.config import Settings
from nmdc_runtime.processes import free_port, stop_group, wait_for

__all__ = [
    "BIN",
    "REPO",
    "ApiURL",
    "free_port",
    "live_api",
    "live_dagster",
    "runtime_env",
    "stop_group",
    "wait_for",
]

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
def _serving(
    name: str,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    probe: str,
    stop_timeout: float,
) -> Iterator[subprocess.Popen]:
    """Run `argv` in a session of its own (output in `log_path`) until GET `probe` answers 200; yields the
    process, and stops its whole process group on leaving."""
    # A file, not a pipe: nobody reads a pipe while the test runs, and a full one would block the server.
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def answering() -> bool:
        assert proc.poll() is None, f"{name} exited: {log_path.read_text(errors='replace')}"
        try:
            return httpx.get(probe, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answering, 120, f"{name} at {probe}")
        yield proc
    finally:
        stop_group(proc, timeout=stop_timeout)


@contextlib.contextmanager
def live_api(settings: Settings, home: Path, workers: int = 1, **env: str) -> Iterator[ApiURL]:
    """`uvicorn api.main:app` (with `--workers` when more than one) on a free port (log in `home/api.log`);
    yields its base URL (with `.pid`), then stops it."""
    port = free_port()
    url = ApiURL(f"http://127.0.0.1:{port}")
    argv = [str(BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with _serving(
        "the API",
        argv + (["--workers", str(workers)] if workers > 1 else []),
        cwd=REPO,
        env=runtime_env(settings, home, **env),
        log_path=home / "api.log",
        probe=url + "/health",
        stop_timeout=20,
    ) as proc:
        url.pid = proc.pid
        yield url


@contextlib.contextmanager
def live_dagster(settings: Settings, home: Path, **env: str) -> Iterator[str]:
    """`dagster dev` (webserver, daemon and one code server) on a free port, with DAGSTER_HOME under `home`
    holding the repository's dagster.yaml (log in `home/dagster.log`); yields the UI's base URL, then stops
    the whole process group."""
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = runtime_env(settings, home, DAGSTER_HOME=str(dagster_home), **env)
    environment["PYTHONWARNINGS"] = "ignore:Function `dev_command` is superseded"
    argv = [str(BIN / "dagster"), "dev", "-w", str(REPO / "workspace.yaml")]
    with _serving(
        "dagster dev",
        [*argv, "--host", "127.0.0.1", "--port", str(port)],
        # From DAGSTER_HOME, as `make dev` does: elsewhere dagster dev warns about the repository's yaml.
        cwd=dagster_home,
        env=environment,
        log_path=home / "dagster.log",
        probe=url + "/server_info",
        # Its databases are thrown away after the test: no need to wait out the webserver's graceful
        # shutdown (about 10 s here) before the group is killed.
        stop_timeout=3,
    ):
        yield url
