"""`make dev`: one process that starts the whole system, says when it is ready, and stops all of it on Ctrl-C
or SIGTERM.

With `NMDC_LOG_FORMAT=json` every line it prints is one JSON object of `nmdc_runtime.logs`'s schema: it reads
what each child process writes and rewrites each line (`logs.LineNormalizer`), since uvicorn's supervisor,
Dagster's processes and the code server's sensor lines each have a format of their own.
"""

from __future__ import annotations

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from nmdc_runtime import logs
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


def _start(
    name: str, argv: list[str], env: dict[str, str], cwd: Path = REPO, *, piped: bool = False
) -> subprocess.Popen:
    """Start a child in a session of its own (we stop the whole group: dagster dev has children of its own);
    `piped`: its standard output and error come to us, line by line, instead of going to ours."""
    log.info("starting %s: %s", name, " ".join(argv))
    if not piped:
        return subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True)
    return subprocess.Popen(
        argv,
        # Python children write each line as it comes rather than in blocks (a pipe is not a terminal).
        env={**env, "PYTHONUNBUFFERED": "1"},
        cwd=cwd,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )


_output_lock = threading.Lock()


def _relay_json(name: str, stream: IO[str]) -> None:
    """Copy a child's output to our standard error, each line rewritten as one JSON object of our schema."""
    normalize = logs.LineNormalizer(name)
    for raw in stream:
        record = normalize(raw)
        if record is not None:
            line = json.dumps(record, default=str)
            with _output_lock:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
    stream.close()


class Readiness:
    """What `make dev` waits for before it says it is ready: the API answers /health, the Dagster UI answers,
    and the daemon has run a sensor tick since we started (until then, sensors have made nothing)."""

    WHAT = {
        "api": "the API (GET /health)",
        "ui": "the Dagster UI",
        "tick": "the Dagster daemon's first sensor tick",
    }
    SENSORS = """{ repositoriesOrError { ... on RepositoryConnection {
        nodes { name location { name } sensors { name } } } } }"""
    # One sensor's latest tick. By name: asked for in a list of sensors, Dagster leaves SKIPPED ticks out, and
    # every tick of ours is SKIPPED (README, "What a tick says").
    TICK = """%s: sensorOrError(sensorSelector: {repositoryLocationName: %s, repositoryName: %s,
        sensorName: %s}) { ... on Sensor { sensorState { status ticks(limit: 1) { timestamp } } } }"""
    """A selection of the query; its values are GraphQL strings (JSON's quoting is GraphQL's)."""

    def __init__(self, api_url: str, ui_url: str, started: float) -> None:
        self.api_url, self.ui_url, self.started = api_url, ui_url, started
        self.waiting = list(self.WHAT)
        self.said_at = time.monotonic()
        self.http = httpx.Client(timeout=2)

    def close(self) -> None:
        self.http.close()

    def advance(self) -> bool:
        """Check what is still awaited (the tick only once the UI answers) and say what became ready, or every
        30 s what is still awaited; True once everything is ready."""
        ready = [what for what in list(self.waiting) if self._check(what)]
        for what in ready:
            self.waiting.remove(what)
        if not self.waiting:
            return True
        if ready or time.monotonic() - self.said_at >= 30:
            done = f"{self.names(ready)} ready; " if ready else "still "
            log.info("%.0f s: %swaiting for %s", time.time() - self.started, done, self.waiting_for())
            self.said_at = time.monotonic()
        return False

    def _check(self, what: str) -> bool:
        try:
            if what == "api":
                return self.http.get(self.api_url + "/health").status_code == 200
            if what == "ui":
                return self.http.get(self.ui_url + "/server_info").status_code == 200
            return "ui" not in self.waiting and self._ticked()
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return False

    def _graphql(self, query: str) -> dict:
        answer = self.http.post(self.ui_url + "/graphql", json={"query": query})
        return answer.json().get("data") or {} if answer.status_code == 200 else {}

    def _ticked(self) -> bool:
        """Whether a sensor has ticked since we started (or, with every sensor stopped, none ever will)."""
        repositories = (self._graphql(self.SENSORS).get("repositoriesOrError") or {}).get("nodes", [])
        selections = [
            self.TICK % (f"s{n}", *map(json.dumps, (location, repository, sensor)))
            for n, (location, repository, sensor) in enumerate(
                (repo["location"]["name"], repo["name"], sensor["name"])
                for repo in repositories
                for sensor in repo["sensors"]
            )
        ]
        if not selections:
            return False
        states = [
            answer["sensorState"]
            for answer in self._graphql("{ " + "\n".join(selections) + " }").values()
            if answer and "sensorState" in answer
        ]
        if any(tick["timestamp"] >= self.started for state in states for tick in state["ticks"]):
            return True
        return bool(states) and not any(state["status"] == "RUNNING" for state in states)

    def names(self, which: list[str]) -> str:
        names = [self.WHAT[what] for what in which]
        return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]

    def waiting_for(self) -> str:
        return self.names(self.waiting)


@dataclass
class Banner:
    """Where everything is: printed once, when everything answers."""

    api: str
    dagster_ui: str
    database: str
    dagster_database: str
    state: str
    lines: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.lines = [
            f"  API        {self.api}",
            f"  Dagster UI {self.dagster_ui}",
            f"  database   {self.database}",
            f"  Dagster DB {self.dagster_database}",
            f"  state      {self.state}",
        ]

    def show(self, seconds: float, json_logs: bool) -> None:
        ready = f"ready in {seconds:.1f} s"
        if json_logs:
            fields = {k: v for k, v in vars(self).items() if k != "lines"}
            log.info(
                "%s: API %s, Dagster UI %s; Ctrl-C stops everything",
                ready,
                self.api,
                self.dagster_ui,
                extra={**fields, "seconds": round(seconds, 1)},
            )
            return
        # Standard error, like every command's naming of its database: standard output is for results.
        with _output_lock:
            print("\n" + "\n".join(self.lines), file=sys.stderr)
            print(f"  {ready.capitalize()}. Ctrl-C stops everything.\n", file=sys.stderr, flush=True)


def _redacted(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def run(settings: Settings, *, verbose: bool = False) -> int:
    """Start everything, say when it is ready, wait until a child dies or we are told to stop, then stop
    everything.

    Quiet unless `verbose`: no line per API request and no Dagster info lines (a sensor tick every few
    seconds), only warnings, errors and what the API and Dagster say at start and stop.
    """
    started = time.time()
    json_logs = settings.log_format == "json"
    logs.configure(settings.log_format, everything=True)
    # Migrations are applied at each start; their step-by-step log is noise unless one fails.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The readiness checks' requests (below) are not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
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
    api_url = f"http://127.0.0.1:{settings.api_port}"
    ui_url = f"http://127.0.0.1:{settings.dagster_port}"
    banner = Banner(
        api=api_url + "/docs",
        dagster_ui=ui_url,
        database=_redacted(env["NMDC_DATABASE_URL"]),
        dagster_database=_redacted(env["NMDC_DAGSTER_DATABASE_URL"]),
        state=str(settings.home),
    )
    readiness = Readiness(api_url, ui_url, started)
    children: dict[str, subprocess.Popen] = {}
    relays: list[threading.Thread] = []
    code = 0
    try:
        for name, (argv, child_environment, cwd) in commands.items():
            if stopping:
                break
            children[name] = proc = _start(name, argv, child_environment, cwd, piped=json_logs)
            if json_logs:
                relay = threading.Thread(target=_relay_json, args=(name, proc.stdout), daemon=True)
                relay.start()
                relays.append(relay)
        log.info("waiting for %s", readiness.waiting_for())
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
            if readiness.waiting and not stopping and readiness.advance():
                banner.show(time.time() - started, json_logs)
            time.sleep(0.5)
    finally:
        readiness.close()
        for name, proc in reversed(children.items()):
            stop_group(proc, name=name, leader_first=name == "dagster")
        for relay in relays:
            # The children have exited; what they wrote last is still to be copied.
            relay.join(timeout=5)
    # The embedded server stops when this process exits (it holds the last handle).
    log.info("stopped")
    return code
