"""`make dev` as a newcomer runs it, with `NMDC_LOG_FORMAT=json`: it says what it waits for, prints one ready
line once everything answers, and every line it prints, up to and after Ctrl-C, is one JSON object of one
schema.

Real processes: make, the supervisor, a fresh embedded PostgreSQL in a throwaway NMDC_HOME, uvicorn with two
workers, `dagster dev` (webserver, daemon, code server), on free ports. `VERBOSE=1`, so that every kind of
line shows up (requests, the daemon's info lines). About 30 s on this machine: 15-20 s to the ready line,
the checks, then 5-10 s for Dagster to stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from nmdc_runtime.logs import LEVELS
from tests.processes import REPO, embedded_home, free_port, stop_group, wait_for

pytestmark = pytest.mark.e2e

READY_TIMEOUT = 180
KEYS = ["time", "level", "logger", "message"]
SENSORS = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } sensors { name } } } } }"
LATEST_TICK = """query Tick($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { ... on Sensor { sensorState { ticks(limit: 1) { timestamp } } } }
}"""


def _env(home: Path, api_port: int, dagster_port: int) -> dict[str, str]:
    # As from a shell: none of this run's settings, and not a sub-make of `make test` (which would print
    # "Entering directory" lines).
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NMDC_", "DAGSTER_", "MAKE", "MFLAGS", "PYTEST_"))
    }
    env.update(
        NMDC_HOME=str(home),
        NMDC_API_PORT=str(api_port),
        NMDC_DAGSTER_PORT=str(dagster_port),
        NMDC_LOG_FORMAT="json",
    )
    return env


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def _ready_line(path: Path) -> dict | None:
    for line in _lines(path):
        if '"ready in ' in line:
            return json.loads(line)
    return None


def _sensor_ticked_since(ui: str, since: float) -> bool:
    """A sensor of the code location has a tick at or after `since` (each sensor asked by name: Dagster leaves
    SKIPPED ticks out of lists)."""

    def query(text: str, **variables) -> dict:
        body = httpx.post(ui + "/graphql", json={"query": text, "variables": variables}, timeout=30).json()
        assert "errors" not in body, body
        return body["data"]

    repositories = query(SENSORS)["repositoriesOrError"]["nodes"]
    for repo in repositories:
        for sensor in repo["sensors"]:
            selector = {
                "repositoryLocationName": repo["location"]["name"],
                "repositoryName": repo["name"],
                "sensorName": sensor["name"],
            }
            ticks = query(LATEST_TICK, selector=selector)["sensorOrError"]["sensorState"]["ticks"]
            if any(tick["timestamp"] >= since for tick in ticks):
                return True
    return False


def test_make_dev_is_ready_once_everything_answers_and_every_line_is_json(tmp_path: Path):
    api_port, dagster_port = free_port(), free_port()
    api, ui = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{dagster_port}"
    out = tmp_path / "make-dev.log"
    with embedded_home() as home, out.open("wb") as sink:
        started = time.time()
        make = subprocess.Popen(
            ["make", "dev", "VERBOSE=1"],
            cwd=REPO,
            env=_env(home, api_port, dagster_port),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            # A process group of its own, like a terminal's foreground job: Ctrl-C reaches make and its child.
            start_new_session=True,
        )
        try:

            def ready() -> dict | None:
                assert make.poll() is None, f"make dev exited with {make.returncode}:\n{out.read_text()}"
                return _ready_line(out)

            line = wait_for(ready, READY_TIMEOUT, "make dev's ready line", interval=0.2)
            waited = time.time() - started
            # Everything it promised answers now (none of it can have come up only after the line).
            assert httpx.get(api + "/health", timeout=10).status_code == 200
            assert httpx.get(ui + "/server_info", timeout=10).status_code == 200
            assert _sensor_ticked_since(ui, started)
            assert line["api"] == api + "/docs" and line["dagster_ui"] == ui
            assert 0 < line["seconds"] <= waited
            # A request, for the API's request line.
            assert httpx.get(api + "/openapi.json", timeout=10).status_code == 200
            time.sleep(1)
        finally:
            # Ctrl-C.
            os.killpg(make.pid, signal.SIGINT)
            try:
                make.wait(60)
            finally:
                stop_group(make, timeout=5)

    lines = _lines(out)
    records = []
    for number, text in enumerate(lines, 1):
        assert "\x1b" not in text and "\\u001b" not in text, f"line {number} has terminal codes: {text}"
        try:
            record = json.loads(text)
        except ValueError:
            pytest.fail(f"line {number} of {len(lines)} is not JSON: {text}")
        assert isinstance(record, dict), text
        assert list(record)[:4] == KEYS, text
        assert record["level"] in LEVELS, text
        assert datetime.fromisoformat(record["time"]).utcoffset() is not None, text
        assert "color_message" not in record, text
        records.append(record)

    messages = [record["message"] for record in records]
    ready_at = next(i for i, message in enumerate(messages) if message.startswith("ready in "))
    assert [m for m in messages if m.startswith("ready in ")] == [messages[ready_at]]
    assert any(m.startswith("waiting for the API") for m in messages[:ready_at]), messages[:ready_at]
    # Every child spoke, each in its own way, and was brought to the one schema.
    processes = {record.get("process") for record in records}
    assert {"api", "dagster"} <= processes, processes
    loggers = {record["logger"] for record in records}
    assert {"nmdc_runtime.dev", "nmdc_runtime.api", "uvicorn.error", "dagster.daemon.SensorDaemon"} <= loggers
    assert any(m.startswith("Uvicorn running on") for m in messages)  # uvicorn's supervisor, plain text
    assert any(r["message"].startswith("GET /openapi.json") for r in records if r.get("process") == "api")
    # A clean stop: the supervisor's last word, and nothing from make (no echoed recipe, no "*** Error").
    assert messages[-1] == "stopped"
    assert make.returncode in (0, -signal.SIGINT), make.returncode
