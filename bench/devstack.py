"""`make dev` as a benchmark fixture: started in its own state folder and ports, stopped as `make dev` is."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from nmdc_runtime.db import APP_DATABASE, Database
from nmdc_runtime.processes import free_port, stop_group

REPO = Path(__file__).resolve().parent.parent


@dataclass
class DevStack:
    """A running `make dev`: where its API is, and its runtime database."""

    api_url: str
    dagster_url: str
    database: Database
    home: Path
    started_in: float
    """Seconds from `make dev` to both the API and the Dagster UI answering."""


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def leftover_processes(home: Path) -> list[str]:
    """Processes still running that belong to the stack under `home` (matched on command lines)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if str(home) in line]


@contextmanager
def dev_stack(
    home: Path, log: Path, timeout: float = 180.0, api_workers: int | None = None
) -> Iterator[DevStack]:
    """Start `make dev` with NMDC_HOME=`home` on free ports; SIGTERM it on exit and wait for everything to stop.

    `api_workers` sets NMDC_API_WORKERS (uvicorn worker processes); None leaves whatever the environment or
    the setting's default says.
    """
    home.mkdir(parents=True, exist_ok=True)
    api_port, dagster_port = free_port(), free_port()
    env = dict(
        os.environ, NMDC_HOME=str(home), NMDC_API_PORT=str(api_port), NMDC_DAGSTER_PORT=str(dagster_port)
    )
    for name in ("NMDC_DATABASE_URL", "NMDC_DAGSTER_DATABASE_URL", "DAGSTER_HOME"):
        env.pop(name, None)
    if api_workers is not None:
        env["NMDC_API_WORKERS"] = str(api_workers)
    started = time.monotonic()
    with log.open("w") as output:
        proc = subprocess.Popen(
            ["make", "dev"],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        api_url, dagster_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{dagster_port}"
        database = None
        try:
            while not (_up(api_url + "/health") and _up(dagster_url + "/server_info")):
                if proc.poll() is not None:
                    raise RuntimeError(f"make dev exited with {proc.returncode}; see {log}")
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"make dev not ready after {timeout:.0f} s; see {log}")
                time.sleep(0.5)
            ready = time.monotonic() - started
            # The embedded server's socket, without attaching to it: attached, this process would keep the
            # server alive after `make dev` stops, and hide whether `make dev` stops everything it started.
            database = Database(f"postgresql+psycopg2://postgres:@/{APP_DATABASE}?host={home / 'pg'}")
            yield DevStack(api_url, dagster_url, database, home, ready)
        finally:
            if database is not None:
                database.dispose()
            stop_group(proc, 60, name="make dev")
