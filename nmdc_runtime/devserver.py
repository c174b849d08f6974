"""`make dev`: one process that starts the whole system and stops all of it on Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from nmdc_runtime.config import Settings
from nmdc_runtime.db import embedded_server, resolve_urls
from nmdc_runtime.migrations import upgrade
from nmdc_runtime.processes import stop_group

log = logging.getLogger("nmdc_runtime.dev")

REPO = Path(__file__).resolve().parent.parent


def prepare_dagster_home(settings: Settings) -> Path:
    """Make `NMDC_HOME/dagster` a Dagster home whose dagster.yaml is the repository's (a symlink).

    A link rather than a copy: the repository's file stays the one source of truth, and an edit to it
    applies at the next start. Returns the folder (the value of DAGSTER_HOME).
    """
    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    target = REPO / "dagster.yaml"
    if not (link.is_symlink() and link.resolve() == target.resolve()):
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return home


def prepare_metrics_dir(settings: Settings) -> Path:
    """An empty `NMDC_HOME/metrics`, for PROMETHEUS_MULTIPROC_DIR of the API's workers.

    prometheus_client's multiprocess mode: each worker writes its counters and histograms to files there,
    and `GET /metrics` sums them, so a scrape shows the whole API whichever worker answers. A dead worker's
    files stay and keep counting in the sums (counters must not go down); gauges, which would need
    `mark_process_dead` (a gunicorn `child_exit` hook; uvicorn has none), are not used. Emptied at each
    start, since the files of a previous run would otherwise be added to this one's.
    """
    path = settings.home / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the API and Dagster processes: explicit URLs, so they attach and never start a server."""
    urls = resolve_urls(settings)
    env = dict(os.environ)
    env.update(
        NMDC_HOME=str(settings.home),
        NMDC_DATABASE_URL=urls.runtime,
        NMDC_DAGSTER_DATABASE_URL=urls.dagster,
        DAGSTER_HOME=str(prepare_dagster_home(settings)),
    )
    return env


def _start(name: str, argv: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.Popen:
    log.info("starting %s: %s", name, " ".join(argv))
    # A session of its own: we stop the whole group (dagster dev has children of its own).
    return subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True)


def _redacted(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def run(settings: Settings, *, verbose: bool = False) -> int:
    """Start everything, wait until a child dies or we are told to stop, then stop everything.

    Quiet unless `verbose`: no line per API request and no Dagster info lines (a sensor tick every few
    seconds), only warnings, errors and what the API and Dagster say at start and stop.
    """
    stopping = False

    def _on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    # Before anything starts: a signal during start-up must still stop what was started (the children run
    # in sessions of their own, so nothing else would).
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    env = child_env(settings)
    upgrade(env["NMDC_DATABASE_URL"])
    bindir = Path(sys.executable).parent
    commands = {
        "api": (
            [
                str(bindir / "uvicorn"),
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.api_port),
                "--workers",
                str(settings.api_workers),
                *settings.uvicorn_proxy_options(),
            ],
            {
                **env,
                "PROMETHEUS_MULTIPROC_DIR": str(prepare_metrics_dir(settings)),
                "NMDC_LOG_REQUESTS": "true" if verbose else "false",
            },
            REPO,
        ),
        "dagster": (
            [
                str(bindir / "dagster"),
                "dev",
                "-w",
                str(REPO / "workspace.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.dagster_port),
                "--log-level",
                "info" if verbose else "warning",
                "--log-format",
                "json" if settings.log_format == "json" else "colored",
            ],
            # `dagster dev` is what the README documents; its advice to move to `dg dev` is noise here.
            {**env, "PYTHONWARNINGS": "ignore:Function `dev_command` is superseded"},
            # From DAGSTER_HOME: started from the repository, `dagster dev` warns that the dagster.yaml it
            # finds there is not the instance's, although DAGSTER_HOME links to that very file.
            Path(env["DAGSTER_HOME"]),
        ),
    }
    children: dict[str, subprocess.Popen] = {}
    code = 0
    try:
        for name, (argv, child_environment, cwd) in commands.items():
            if stopping:
                break
            children[name] = _start(name, argv, child_environment, cwd)
        print(
            f"\n  API        http://127.0.0.1:{settings.api_port}/docs\n"
            f"  Dagster UI http://127.0.0.1:{settings.dagster_port}\n"
            f"  database   {_redacted(env['NMDC_DATABASE_URL'])}\n"
            f"  Dagster DB {_redacted(env['NMDC_DAGSTER_DATABASE_URL'])}\n"
            f"  state      {settings.home}\n  Ctrl-C stops everything.\n",
            # Standard error, like every command's naming of its database: standard output is for results.
            file=sys.stderr,
            flush=True,
        )
        server = None if settings.database_url else embedded_server(settings.home)
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    log.error("%s exited with code %s; stopping the rest", name, proc.returncode)
                    stopping, code = True, 1
            if server is not None and not server.get_postmaster_info().is_running():
                # Without its database the system only answers 503: say so and stop, rather than limp on.
                log.error("the embedded PostgreSQL server stopped (see %s); stopping the rest", server.log)
                stopping, code = True, 1
            time.sleep(0.5)
    finally:
        for name, proc in reversed(children.items()):
            stop_group(proc, name=name)
    # The embedded server stops when this process exits (it holds the last handle).
    log.info("stopped")
    return code
