"""`nmdc-site serve`, `run` and `watch` as real processes against a live API (uvicorn) on real PostgreSQL.

Jobs are made with `POST /jobs` as an admin, so no Dagster is needed. The API runs with a short lease
(LEASE seconds) so that lease renewal, cancellation and restarts show within seconds.

Cost, in full runs of `make test` (three workers, two cores): the demo 41-43 s; the lease, pause and outage
tests 8-17 s each, as their leases and waits make them; the faults of a site (checks, 429 bursts, a kill after
the command, a dripping data site, SIGTERM) 5-9 s each; the rest 1-4 s.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database
from nmdc_runtime.services import accounts as accounts_service
from nmdc_site.client import NmdcClient, Operation
from nmdc_site.files import FileServer
from tests.integration.conftest import ADMIN_PASSWORD, make_site
from tests.processes import free_port, live_api, wait_for
from tests.site_servers import Recorder, ScriptedApi, drip, finishing
from tests.tcp_gate import Gate

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
LEASE = 6
WORKFLOW = "stats"
STATS = [sys.executable, "-m", "nmdc_site.examples.stats", "{inputs}"]


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live API on this run's database, with a LEASE-second claim lease."""
    with live_api(settings, tmp_path_factory.mktemp("api_home"), NMDC_CLAIM_LEASE_SECONDS=str(LEASE)) as url:
        yield url


class World:
    """An admin, a data site, an executing site and a workflow, on an emptied-after-use database."""

    def __init__(self, api_url: str, database: Database) -> None:
        self.api_url = api_url
        with database.session() as session:
            accounts_service.create_user(
                session, username="admin", password=ADMIN_PASSWORD, admin=True, actor="tests"
            )
        self.admin = NmdcClient(api_url, username="admin", password=ADMIN_PASSWORD)
        self.data_creds = make_site(database, "site-d")
        self.exec_creds = make_site(database, "site-e", ["stats"])
        self.data_site = self.site_client(self.data_creds)
        self.exec_site = self.site_client(self.exec_creds)
        self.admin.create_workflow(
            WORKFLOW,
            data_types=["table"],
            required_capabilities=["stats"],
            config={"output_data_type": "table.stats"},
        )

    def site_client(self, creds: dict[str, str]) -> NmdcClient:
        return NmdcClient(self.api_url, client_id=creds["client_id"], client_secret=creds["client_secret"])

    def env(self, creds: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            NMDC_API_URL=self.api_url,
            NMDC_CLIENT_ID=creds["client_id"],
            NMDC_CLIENT_SECRET=creds["client_secret"],
        )
        return env

    def site(self, creds: dict[str, str], *args: str, **kwargs: Any) -> subprocess.Popen:
        """Start `nmdc-site ARGS...` as that site."""
        return subprocess.Popen(
            [str(BIN / "nmdc-site"), *args],
            env=self.env(creds),
            stdout=subprocess.PIPE,
            stderr=kwargs.pop("stderr", None),
            text=True,
            **kwargs,
        )

    def operations(self, job_id: str) -> list[Operation]:
        return list(self.admin.list_operations(job_id=job_id))

    def close(self) -> None:
        for client in (self.admin, self.data_site, self.exec_site):
            client.close()


@pytest.fixture
def world(api_url: str, clean_database: Database) -> Iterator[World]:
    w = World(api_url, clean_database)
    yield w
    w.close()


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    """Stop a process (if still running) and return its standard output."""
    if proc.poll() is None:
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    return out or ""


def write_table(path: Path, rows: int = 200) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["depth\tgc"] + [f"{i % 37}\t{(i * 7) % 100 / 100:.2f}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP by the test itself, for registering resources by hand."""
    root = tmp_path / "served"
    with FileServer(root, "127.0.0.1", 0) as server:
        yield root, f"http://127.0.0.1:{server.port}"


def register(world: World, root: Path, base: str, name: str, *, sha256: str | None = None) -> str:
    path = root / name
    data = path.read_bytes()
    resource = world.data_site.create_data_resource(
        name=name,
        url=f"{base}/{name}",
        data_type="table",
        size=len(data),
        checksums=[{"type": "sha256", "checksum": sha256 or hashlib.sha256(data).hexdigest()}],
    )
    return resource.id


def make_job(world: World, root: Path, base: str, *, sha256: str | None = None) -> str:
    write_table(root / "sample.tsv")
    resource_id = register(world, root, base, "sample.tsv", sha256=sha256)
    return world.admin.create_job(WORKFLOW, [resource_id]).id


def run_args(state_dir: Path, *command: str, once: bool = True, options: tuple[str, ...] = ()) -> list[str]:
    args = [
        "run",
        "--workflow",
        WORKFLOW,
        "--state-dir",
        str(state_dir),
        "--port",
        "0",
        "--poll-interval",
        "0.5",
        # Everything runs on this machine: the data sites of these tests are on the loopback address.
        "--allow-host",
        "127.0.0.1",
    ]
    return [*args, *options, *(["--once"] if once else []), "--", *command]


# ---- serve ------------------------------------------------------------------------------------------------


def test_serve_registers_each_file_once_even_when_restarted(world: World, tmp_path: Path):
    data = tmp_path / "data"
    write_table(data / "a.tsv")
    write_table(data / "sub" / "b.tsv", rows=10)
    (data / ".hidden").write_text("not published")
    (data / "c.tsv.part").write_text("being written")
    port = str(free_port())

    def serve() -> subprocess.Popen:
        return world.site(
            world.data_creds, "serve", str(data), "--data-type", "table", "--port", port, "--rescan", "0.5"
        )

    def mine() -> list:
        return list(world.admin.list_data_resources(site_id="site-d"))

    proc = serve()
    try:
        resources = wait_for(lambda: len(mine()) == 2 and mine(), 30, "two registrations")
        by_name = {r.name: r for r in resources}
        assert set(by_name) == {"a.tsv", "sub/b.tsv"}
        # The registered URL serves the file, and its size and checksum are right.
        body = httpx.get(by_name["sub/b.tsv"].url).content
        assert len(body) == by_name["sub/b.tsv"].size
        assert hashlib.sha256(body).hexdigest() == by_name["sub/b.tsv"].checksum("sha256")
        assert httpx.get(by_name["a.tsv"].url.replace("a.tsv", ".hidden")).status_code == 404
        # A file added later is picked up by the rescan.
        write_table(data / "d.tsv", rows=3)
        wait_for(lambda: len(mine()) == 3, 30, "the new file")
    finally:
        stop(proc)
    proc = serve()
    try:
        time.sleep(3)  # several rescans
    finally:
        out = stop(proc)
    assert out.strip() == ""  # nothing registered the second time
    assert len(mine()) == 3


# ---- run --------------------------------------------------------------------------------------------------


def test_full_job_from_served_data_to_served_outputs(world: World, tmp_path: Path):
    write_table(tmp_path / "data" / "sample.tsv")
    serve = world.site(
        world.data_creds, "serve", str(tmp_path / "data"), "--data-type", "table", "--port", "0"
    )
    agent = None
    try:
        resource = wait_for(
            lambda: list(world.admin.list_data_resources(site_id="site-d")), 30, "registration"
        )[0]
        job = world.admin.create_job(WORKFLOW, [resource.id])
        agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", *STATS, once=False))

        def finished() -> Operation | None:
            ops = world.operations(job.id)
            return ops[0] if ops and ops[0].done else None

        op = wait_for(finished, 60, "the operation to finish")
        assert op.error is None, op.error
        assert op.metadata.state == "succeeded"
        execution = world.admin.get_execution(job.id, op.result.id)
        assert execution.status == "succeeded"
        assert execution.site_id == "site-e"
        assert execution.details["exit_code"] == 0
        # Every token reads the details: no command line, no output unless asked (--publish-log-tail).
        assert "command" not in execution.details and "log_tail" not in execution.details
        [output] = execution.outputs
        assert output["name"] == "sample.tsv.stats.json"
        assert output["data_type"] == "table.stats"
        # The agent serves its outputs: the registered URL answers with the registered bytes.
        body = httpx.get(output["url"]).content
        assert hashlib.sha256(body).hexdigest() == output["checksums"][0]["checksum"]
        stats = json.loads(body)
        assert stats["rows"] == 200
        assert stats["columns"]["depth"]["max"] == 36
        # The output is a data resource of the executing site.
        assert world.admin.get_data_resource(output["id"]).site_id == "site-e"
        assert world.admin.get_job(job.id).status == "succeeded"
    finally:
        if agent:
            stop(agent)
        stop(serve)


def test_checksum_mismatch_finishes_with_an_error_never_a_success(world: World, tmp_path: Path, served):
    root, base = served
    job_id = make_job(world, root, base, sha256="0" * 64)
    agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", *STATS))
    out = agent.communicate(timeout=60)[0]
    assert agent.returncode == 1, out
    [op] = world.operations(job_id)
    assert op.done and op.result is None
    assert op.error.code == "DATA_LOSS"
    assert "sha256 differs from the declared one" in op.error.message
    assert "0" * 64 not in op.error.message  # what the data site sent is not repeated
    assert list(world.admin.list_executions(job_id)) == []


def test_size_mismatch_is_caught_too(world: World, tmp_path: Path, served):
    root, base = served
    write_table(root / "sample.tsv")
    data = (root / "sample.tsv").read_bytes()
    resource = world.data_site.create_data_resource(
        name="sample.tsv",
        url=f"{base}/sample.tsv",
        data_type="table",
        size=len(data) + 1,
        checksums=[{"type": "sha256", "checksum": hashlib.sha256(data).hexdigest()}],
    )
    job = world.admin.create_job(WORKFLOW, [resource.id])
    agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", *STATS))
    agent.communicate(timeout=60)
    [op] = world.operations(job.id)
    assert op.error.code == "DATA_LOSS"
    assert f"size differs from the declared {len(data) + 1} bytes" in op.error.message
    said = op.error.message.replace(resource.id, "").replace(str(len(data) + 1), "")
    assert str(len(data)) not in said  # the size the data site sent is not repeated


def test_an_input_that_cannot_be_fetched_ends_the_operation_unavailable(world: World, tmp_path: Path, served):
    _root, base = served
    resource = world.data_site.create_data_resource(
        name="missing.tsv",
        url=f"{base}/missing.tsv",
        data_type="table",
        size=3,
        checksums=[{"type": "sha256", "checksum": "0" * 64}],
    )
    job = world.admin.create_job(WORKFLOW, [resource.id])
    agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", *STATS))
    agent.communicate(timeout=60)
    assert agent.returncode == 1
    [op] = world.operations(job.id)
    assert op.error.code == "UNAVAILABLE" and "could not be fetched" in op.error.message
    # What the data site answered stays in the agent's own log (the message names the input: its random id
    # may hold the digits 404 anywhere, so the message is compared whole).
    assert (
        op.error.message == f"input {resource.id} could not be fetched: the data site answered with an error"
    )


def test_a_failing_command_posts_a_failed_execution_and_an_error(world: World, tmp_path: Path, served):
    root, base = served
    job_id = make_job(world, root, base)
    command = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    agent = world.site(
        world.exec_creds, *run_args(tmp_path / "exec", *command, options=("--publish-log-tail",))
    )
    agent.communicate(timeout=60)
    assert agent.returncode == 1
    [op] = world.operations(job_id)
    assert op.done and op.error.code == "COMMAND_FAILED"
    [execution] = world.admin.list_executions(job_id)
    assert execution.status == "failed"
    assert execution.details["exit_code"] == 3
    assert "boom" in execution.details["log_tail"]
    assert op.error.details["execution_id"] == execution.id


def test_cancel_during_a_long_command_stops_it(world: World, tmp_path: Path, served):
    root, base = served
    job_id = make_job(world, root, base)
    marker = tmp_path / "pid"
    command = [
        sys.executable,
        "-c",
        f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)",
    ]
    agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", *command))
    try:
        wait_for(marker.exists, 30, "the command to start")
        pid = int(wait_for(marker.read_text, 5, "the pid"))
        world.admin.cancel_job(job_id)
        out = agent.communicate(timeout=30)[0]
    finally:
        stop(agent)
    [op] = world.operations(job_id)
    assert op.done and op.error.code == "CANCELLED", out
    assert world.admin.get_job(job_id).status == "canceled"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert list(world.admin.list_executions(job_id)) == []


def test_a_paused_operation_stops_the_command_until_resumed(world: World, tmp_path: Path, served):
    root, base = served
    job_id = make_job(world, root, base)
    ticks = tmp_path / "ticks"
    script = (
        "import os, time, pathlib\n"
        f"tick = pathlib.Path({str(ticks)!r})\n"
        "for i in range(40):\n"
        "    tick.write_text(str(i))\n"
        "    time.sleep(0.1)\n"
        "pathlib.Path(os.environ['NMDC_OUTPUT_DIR'], 'out.txt').write_text('done')\n"
    )
    agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", sys.executable, "-c", script))
    try:
        wait_for(ticks.exists, 30, "the command to start")
        [op] = world.operations(job_id)
        world.admin.pause_operation(op.id)
        time.sleep(LEASE / 3 + 1.5)  # a heartbeat brings the news, then the command is stopped
        frozen = ticks.read_text()
        time.sleep(LEASE + 1)  # longer than the lease: a paused lease does not lapse
        assert ticks.read_text() == frozen
        assert agent.poll() is None
        world.admin.resume_operation(op.id)
        out = agent.communicate(timeout=60)[0]
    finally:
        stop(agent)
    assert agent.returncode == 0, out
    [done] = world.operations(job_id)
    assert done.id == op.id and done.metadata.state == "succeeded"


def test_the_lease_is_renewed_during_a_command_longer_than_the_lease(world: World, tmp_path: Path, served):
    root, base = served
    job_id = make_job(world, root, base)
    seconds = LEASE * 2 + 2
    script = (
        "import os, time, pathlib\n"
        f"for i in range({seconds}):\n"
        "    open(os.environ['NMDC_PROGRESS_FILE'], 'a').write(f'{i * 5} step {i}\\n')\n"
        "    time.sleep(1)\n"
        "pathlib.Path(os.environ['NMDC_OUTPUT_DIR'], 'out.txt').write_text('done')\n"
    )
    agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", sys.executable, "-c", script))
    try:
        seen = wait_for(
            lambda: [op for op in world.operations(job_id) if op.metadata.progress], 30, "progress reports"
        )
        assert seen[0].metadata.message.startswith("step")
        out = agent.communicate(timeout=seconds + 30)[0]
    finally:
        stop(agent)
    assert agent.returncode == 0, out
    [op] = world.operations(job_id)  # one operation: the lease never lapsed
    assert op.metadata.state == "succeeded"
    assert op.metadata.attempt == 1
    job = world.admin.get_job(job_id)
    assert job.status == "succeeded" and job.attempts == 1


def test_a_restart_in_the_middle_resumes_the_same_claim_without_double_work(
    world: World, tmp_path: Path, served
):
    root, base = served
    # A lease longer than the restart takes on a loaded machine: what is tested is the resumption, not a race
    # with the lease (its lapse while the agent is down is the outage test's).
    world.admin.update_workflow(WORKFLOW, lease_seconds=60)
    job_id = make_job(world, root, base)
    runs = tmp_path / "runs"
    script = (
        "import os, time, pathlib\n"
        f"with open({str(runs)!r}, 'a') as f: f.write(str(os.getpid()) + '\\n')\n"
        "time.sleep(4)\n"
        "pathlib.Path(os.environ['NMDC_OUTPUT_DIR'], 'out.txt').write_text('done')\n"
    )
    state_dir = tmp_path / "exec"
    first = world.site(world.exec_creds, *run_args(state_dir, sys.executable, "-c", script))
    try:
        wait_for(runs.exists, 30, "the command to start")
        [op_before] = world.operations(job_id)
        saved = json.loads((state_dir / "current.json").read_text())
        assert saved["operation_id"] == op_before.id
    finally:
        stop(first, signal.SIGKILL)  # a crash: no chance to clean up
    # The command dies with its agent rather than running on unsupervised.
    interrupted = int(runs.read_text().split()[0])
    wait_for(lambda: not _alive(interrupted), 10, "the orphaned command to stop")

    second = world.site(world.exec_creds, *run_args(state_dir, sys.executable, "-c", script))
    out = second.communicate(timeout=60)[0]
    assert second.returncode == 0, out
    [op] = world.operations(job_id)
    assert op.id == op_before.id  # the restarted agent got its own claim back (200), not a new one
    assert op.metadata.state == "succeeded"
    assert len(list(world.admin.list_executions(job_id))) == 1
    assert world.admin.get_job(job_id).attempts == 1
    assert not (state_dir / "current.json").exists()


def test_a_restart_after_the_command_finished_does_not_run_it_again(world: World, tmp_path: Path, served):
    """State says the command ran (the agent died before posting the execution): only the reporting remains."""
    root, base = served
    job_id = make_job(world, root, base)
    claim = world.exec_site.claim_job(job_id)
    state_dir = tmp_path / "exec"
    (state_dir / "outputs" / job_id).mkdir(parents=True)
    (state_dir / "outputs" / job_id / "result.txt").write_text("42\n")
    (state_dir / "current.json").write_text(
        json.dumps(
            {
                "job_id": job_id,
                "operation_id": claim.operation.id,
                "workflow_id": WORKFLOW,
                "phase": "ran",
                "exit_code": 0,
                "started_at": "2024-01-01T00:00:00Z",
                "ended_at": "2024-01-01T00:00:01Z",
            }
        )
    )
    never = tmp_path / "ran-again"
    agent = world.site(world.exec_creds, *run_args(state_dir, "touch", str(never)))
    out = agent.communicate(timeout=60)[0]
    assert agent.returncode == 0, out
    assert not never.exists()
    [op] = world.operations(job_id)
    assert op.id == claim.operation.id and op.metadata.state == "succeeded"
    [execution] = world.admin.list_executions(job_id)
    assert [o["name"] for o in execution.outputs] == ["result.txt"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


# ---- start-up checks and loud failures ----------------------------------------------------------------------


def site_command(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run `nmdc-site ARGS...` to its end."""
    return subprocess.run(
        [str(BIN / "nmdc-site"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single line a failed command printed on standard error (and nothing else, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_an_unknown_workflow_ends_the_run_at_once_with_one_line(world: World, tmp_path: Path):
    started = time.monotonic()
    result = site_command(
        world.env(world.exec_creds),
        *["run", "--workflow", "nosuch", "--once", "--state-dir", str(tmp_path / "exec"), "--", "true"],
    )
    assert result.returncode == 1
    assert one_error_line(result) == "error: workflow 'nosuch' does not exist (GET /workflows/nosuch: 404)"
    assert time.monotonic() - started < 10


def test_a_site_without_the_workflow_s_capabilities_is_told_so_at_start(world: World, tmp_path: Path):
    result = site_command(
        world.env(world.data_creds), *run_args(tmp_path / "exec", "true")
    )  # site-d has no capability; the workflow requires "stats"
    assert result.returncode == 1
    line = one_error_line(result)
    assert "site site-d lacks the capabilities stats that workflow stats requires" in line


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--workflow", WORKFLOW, "--once", "--", "true"],
        ["serve", ".", "--data-type", "t"],
        ["watch", "--once"],
    ],
    ids=["run", "serve", "watch"],
)
def test_bad_credentials_are_one_line_and_exit_1_for_every_command(world: World, tmp_path: Path, args):
    env = {**world.env(world.exec_creds), "NMDC_CLIENT_SECRET": "not-the-secret"}
    result = site_command(env, *args, "--port", "0") if args[0] != "watch" else site_command(env, *args)
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith("error: credentials refused: POST http://") and "/token -> 401" in line


def test_a_malformed_api_url_is_bad_usage(world: World):
    result = site_command(world.env(world.exec_creds), "watch", "--once", "--api-url", "api.example.org")
    assert result.returncode == 2
    assert "--api-url must be an http:// or https:// URL" in one_error_line(result)


def test_an_unreachable_api_is_reported_with_each_retry_then_exit_1(world: World, tmp_path: Path):
    env = {**world.env(world.exec_creds), "NMDC_API_URL": f"http://127.0.0.1:{free_port()}"}
    started = time.monotonic()
    result = site_command(env, *run_args(tmp_path / "exec", "true", options=("--retries", "2")))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert re.search(r"API unreachable, retry 1/2 in [\d.]+ s: POST /token: ConnectError", lines[0]), lines
    assert "API unreachable, retry 2/2" in lines[1]
    assert lines[2].startswith("error: API unreachable at http://127.0.0.1:") and "3 attempts" in lines[2]
    assert len(lines) == 3
    assert time.monotonic() - started < 10


def test_waiting_for_work_says_so_once_in_a_while_not_at_every_look(world: World, tmp_path: Path):
    agent = world.site(
        world.exec_creds, *run_args(tmp_path / "exec", "true", once=False), stderr=subprocess.PIPE
    )
    time.sleep(3)  # about ten looks at 0.5 s, well within one "now and then"
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert "site site-e takes jobs of workflow stats" in err
    assert err.count("no claimable job for stats") == 1, err


@pytest.fixture
def gate(api_url: str) -> Iterator[Gate]:
    """The API behind a gate the test can shut (connections dropped) and open again."""
    with Gate(int(api_url.rsplit(":", 1)[1])) as g:
        yield g


def _long_command(marker: Path, seconds: float) -> list[str]:
    script = (
        "import os, time, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))\n"
        f"time.sleep({seconds})\n"
        "pathlib.Path(os.environ['NMDC_OUTPUT_DIR'], 'out.txt').write_text('done')\n"
    )
    return [sys.executable, "-c", script]


def agent_behind(
    gate: Gate, world: World, tmp_path: Path, *, seconds: float, beats: int, options: tuple[str, ...] = ()
) -> subprocess.Popen:
    """`nmdc-site run --once` talking to the API through `gate`, its command (writing its pid to
    `tmp_path/started`, then sleeping `seconds`) started and `beats` heartbeats through."""
    command = _long_command(tmp_path / "started", seconds)
    agent = subprocess.Popen(
        [str(BIN / "nmdc-site"), *run_args(tmp_path / "exec", *command, options=options)],
        env={**world.env(world.exec_creds), "NMDC_API_URL": gate.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for((tmp_path / "started").exists, 30, "the command to start")
        wait_for(lambda: len(gate.patches) >= beats, 10, f"{beats} heartbeats")
    except BaseException:
        stop(agent)
        raise
    return agent


def test_heartbeats_ride_out_an_outage_shorter_than_the_lease(
    world: World, tmp_path: Path, served, gate: Gate
):
    root, base = served
    job_id = make_job(world, root, base)
    agent = agent_behind(gate, world, tmp_path, seconds=7, beats=3)
    try:
        time.sleep(0.3)  # the third one's answer is back: the lease runs LEASE seconds from it
        gate.shut()
        time.sleep(LEASE / 3 + 0.5)  # at least one heartbeat falls in the outage
        gate.reopen()
        _, err = agent.communicate(timeout=60)
    finally:
        stop(agent)
    assert agent.returncode == 0, err
    assert re.search(
        rf"API unreachable while holding job {job_id}, retry 1 in [\d.]+ s \(lease ends in", err
    ), err
    [op] = world.operations(job_id)  # the claim was never lost
    assert op.metadata.state == "succeeded" and op.metadata.attempt == 1
    # Before the outage, one heartbeat every third of the operation's lease (LEASE = 6 s).
    beats = gate.patches[:3]
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    # (Bounds wide enough for a loaded machine, narrow enough to tell 2 s from 1 s or 30 s.)
    assert all(LEASE / 3 - 0.5 < gap < LEASE / 3 + 2 for gap in gaps), gaps


def test_an_outage_longer_than_the_lease_stops_the_command_and_keeps_the_claim_for_later(
    world: World, tmp_path: Path, served, gate: Gate
):
    root, base = served
    job_id = make_job(world, root, base)
    marker = tmp_path / "started"
    state_dir = tmp_path / "exec"
    agent = agent_behind(gate, world, tmp_path, seconds=60, beats=2, options=("--retries", "1"))
    try:
        gate.shut()
        _, err = agent.communicate(timeout=LEASE + 20)
    finally:
        stop(agent)
    assert agent.returncode == 1, err
    assert "Traceback" not in err
    assert f"job {job_id}: the lease ran out" in err and "the claim stays recorded" in err
    assert err.strip().splitlines()[-1].startswith("error: API unreachable at")
    assert not _alive(int(marker.read_text()))  # the command was stopped with its lease
    assert json.loads((state_dir / "current.json").read_text())["job_id"] == job_id

    # With the API back, the next start takes the job up again and finishes it.
    gate.reopen()
    again = world.site(world.exec_creds, *run_args(state_dir, *_long_command(tmp_path / "second", 0)))
    out = again.communicate(timeout=60)[0]
    assert again.returncode == 0, out
    ops = world.operations(job_id)
    assert [op.metadata.state for op in ops if op.done][-1] == "succeeded"
    assert not (state_dir / "current.json").exists()


# ---- the site's own faults, finished work, slow data sites, stopping (issue 25) -------------------------------


def test_a_missing_executable_is_found_by_the_check_before_any_claim(world: World, tmp_path: Path, served):
    root, base = served
    job_id = make_job(world, root, base)
    env = world.env(world.exec_creds)
    missing = ("no-such-program", "{inputs}")
    check = site_command(env, *run_args(tmp_path / "exec", *missing, once=False, options=("--check",)))
    assert check.returncode == 1
    assert one_error_line(check) == "error: the command's executable no-such-program is not found on PATH"
    # Without --check, the same check comes before the first claim.
    run = site_command(env, *run_args(tmp_path / "exec", *missing))
    assert run.returncode == 1
    assert "no-such-program is not found on PATH" in one_error_line(run)
    assert world.operations(job_id) == []
    job = world.admin.get_job(job_id)
    assert (job.status, job.attempts) == ("unclaimed", 0)
    # A sound set-up: --check says what would run, and claims nothing either.
    ready = site_command(env, *run_args(tmp_path / "exec", *STATS, once=False, options=("--check",)))
    assert ready.returncode == 0, ready.stderr
    assert f"executable {sys.executable}\n" in ready.stdout
    assert "command    " + " ".join(STATS) in ready.stdout
    assert ready.stdout.strip().splitlines()[-1] == "ok: ready to claim jobs of stats (nothing claimed)"
    assert world.operations(job_id) == []


def test_a_failed_check_reports_recorded_finished_work_and_gives_back_a_recorded_claim(
    world: World, tmp_path: Path, served
):
    """The executable went missing while a claim was recorded: finished work is still reported (it needs no
    command), a job not that far is given back, and the run ends with the check's one line."""
    root, base = served
    env = world.env(world.exec_creds)
    for finished in (True, False):
        job_id = make_job(world, root, base)
        op = world.exec_site.claim_job(job_id).operation
        state_dir = tmp_path / f"exec-{finished}"
        state_dir.mkdir()
        recorded = {"job_id": job_id, "operation_id": op.id, "workflow_id": WORKFLOW, "phase": "claimed"}
        if finished:
            times = {"started_at": "2024-01-01T00:00:00Z", "ended_at": "2024-01-01T00:00:01Z"}
            recorded.update(phase="ran", exit_code=0, **times)
        (state_dir / "current.json").write_text(json.dumps(recorded))
        result = site_command(env, *run_args(state_dir, "no-such-program"))
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]  # after the log lines of what was done meanwhile
        assert last == "error: the command's executable no-such-program is not found on PATH"
        assert "Traceback" not in result.stderr
        [ended] = world.operations(job_id)
        if finished:
            assert ended.metadata.state == "succeeded", ended
        else:
            assert (ended.metadata.state, ended.error.details["reason"]["code"]) == ("canceled", "SITE_FAULT")
            assert "executable is missing" in ended.error.details["reason"]["message"]
            assert world.admin.get_job(job_id).attempts == 0
        assert not (state_dir / "current.json").exists()


def test_a_command_exiting_127_gives_the_job_back_as_the_site_s_fault(world: World, tmp_path: Path, served):
    root, base = served
    job_id = make_job(world, root, base)
    state_dir = tmp_path / "exec"
    # Not --once: a site fault ends the run by itself, rather than failing the next job the same way.
    agent = world.site(
        world.exec_creds, *run_args(state_dir, "sh", "-c", "exit 127", once=False), stderr=subprocess.PIPE
    )
    _, err = agent.communicate(timeout=60)
    assert agent.returncode == 1, err
    assert err.strip().splitlines()[-1].startswith(f"error: job {job_id} given back as this site's fault")
    [op] = world.operations(job_id)
    assert (op.metadata.state, op.error.code) == ("canceled", "CANCELLED")
    reason = op.error.details["reason"]
    assert reason["code"] == "SITE_FAULT" and "exit status 127" in reason["message"]
    job = world.admin.get_job(job_id)
    assert (job.status, job.attempts) == ("unclaimed", 0)  # the attempt given back
    assert list(world.admin.list_executions(job_id)) == []
    assert not (state_dir / "current.json").exists()


def test_bursts_of_429_on_the_token_and_the_finish_leave_the_job_done(
    world: World, tmp_path: Path, served, api_url: str
):
    root, base = served
    job_id = make_job(world, root, base)
    with ScriptedApi(api_url) as api:
        # The finish first meets a 401 (as after the API's key changed), so a token is asked for while the
        # claim is held: two 429s there, then two on the finish itself, each asking for a second's pause.
        expired = api.answer("PATCH", r"^/operations/", 401, when=finishing)
        token = api.answer("POST", r"^/token$", 429, times=2, retry_after=1, after=expired)
        finish = api.answer(
            "PATCH", r"^/operations/", 429, times=2, retry_after=1, when=finishing, after=token
        )
        agent = subprocess.Popen(
            [str(BIN / "nmdc-site"), *run_args(tmp_path / "exec", *STATS)],
            env={**world.env(world.exec_creds), "NMDC_API_URL": api.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    assert (expired.used, token.used, finish.used) == (1, 2, 2)
    # Each retry waited for the Retry-After, and the token's were renewals of a held claim.
    claimed = next(at for at, method, path, *_ in api.log if path.endswith((":claim", ":claimNext")))
    tokens = [at for at, _, path, *_ in api.log if path == "/token" and at > claimed]
    finishes = [at for at, method, _, _, body in api.log if method == "PATCH" and finishing(body)]
    assert len(tokens) == 3 and len(finishes) == 4  # 429, 429, the token; 401, 429, 429, the finish
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(tokens)), tokens
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(finishes[1:])), finishes
    assert "API answered 429 while holding job" in err
    [op] = world.operations(job_id)
    assert op.metadata.state == "succeeded" and op.metadata.attempt == 1
    [execution] = world.admin.list_executions(job_id)
    assert op.result.id == execution.id and execution.status == "succeeded"


def test_an_agent_killed_after_its_command_finished_posts_the_result_on_restart(
    world: World, tmp_path: Path, served, api_url: str
):
    root, base = served
    job_id = make_job(world, root, base)
    runs, state_dir = tmp_path / "runs", tmp_path / "exec"
    script = (
        "import os, pathlib\n"
        f"with open({str(runs)!r}, 'a') as f: f.write('ran\\n')\n"
        "pathlib.Path(os.environ['NMDC_OUTPUT_DIR'], 'out.txt').write_text('the result')\n"
    )
    command = (sys.executable, "-c", script)
    with ScriptedApi(api_url) as api:
        down = api.answer("POST", r"^/jobs/[^/]+/executions$", 503, times=None, retry_after=1)
        agent = subprocess.Popen(
            [str(BIN / "nmdc-site"), *run_args(state_dir, *command)],
            env={**world.env(world.exec_creds), "NMDC_API_URL": api.url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: down.used >= 1, 30, "the execution's first POST")
            # What the command finished is in the state dir before it is sent.
            saved = json.loads((state_dir / "current.json").read_text())
        finally:
            agent.kill()
            agent.wait()
    assert saved["phase"] == "ran" and saved["execution"]["status"] == "succeeded"
    assert saved["finish"] == {"result": "execution"}

    again = world.site(world.exec_creds, *run_args(state_dir, *command))
    out = again.communicate(timeout=60)[0]
    assert again.returncode == 0, out
    assert runs.read_text() == "ran\n"  # the command ran once
    [execution] = world.admin.list_executions(job_id)
    assert execution.outputs[0]["checksums"] == saved["execution"]["outputs"][0]["checksums"]
    assert world.admin.get_job(job_id).status == "succeeded"
    assert world.operations(job_id)[-1].result.id == execution.id
    assert not (state_dir / "current.json").exists()


def _slow_job(world: World, site: Recorder, every: float, size: int) -> str:
    """A job whose one input a data site sends one byte at a time, every `every` seconds."""
    site.routes["/slow.tsv"] = drip(every, size)
    resource = world.data_site.create_data_resource(
        name="slow.tsv",
        url=f"{site.base}/slow.tsv",
        data_type="table",
        size=size,
        checksums=[{"type": "sha256", "checksum": hashlib.sha256(b"x" * size).hexdigest()}],
    )
    return world.admin.create_job(WORKFLOW, [resource.id]).id


def test_a_dripping_data_site_ends_the_attempt_within_the_stall_window(world: World, tmp_path: Path):
    with Recorder() as site:
        job_id = _slow_job(world, site, every=0.5, size=10_000)
        window = ("--min-rate", "1000", "--stall-seconds", "2")
        agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", *STATS, options=window))
        wait_for(lambda: site.requests, 30, "the download to start", interval=0.05)
        started = datetime.now(UTC)
        out = agent.communicate(timeout=30)[0]
    assert agent.returncode == 1, out
    [op] = world.operations(job_id)
    took = (op.update_time - started).total_seconds()  # from the download's start to the operation's end
    print(f"the attempt ended {took:.2f} s after the data site saw the request (window 2 s)")
    # The window (counted from just before the request, which the test sees a little late), then a look of
    # the watching thread and the finish.
    assert 1.5 <= took < 4, took
    assert op.error.code == "UNAVAILABLE"
    assert "sent less than 1000 bytes a second for 2 s" in op.error.message
    job = world.admin.get_job(job_id)
    assert (job.status, job.attempts) == ("unclaimed", 1)


def test_sigterm_mid_download_stops_the_agent_within_5_s_keeping_the_claim_or_giving_it_back(
    world: World, tmp_path: Path
):
    state_dir = tmp_path / "exec"
    with Recorder() as site:
        job_id = _slow_job(world, site, every=1.0, size=1000)  # far below the floor, but for a minute

        def stopped_mid_download(*options: str) -> float:
            seen = len(site.requests)
            agent = world.site(world.exec_creds, *run_args(state_dir, *STATS, options=options))
            try:
                wait_for(lambda: len(site.requests) > seen, 30, "the download to start")
                time.sleep(1.5)  # a byte or two in, the reading thread blocked on the next
                started = time.monotonic()
                agent.send_signal(signal.SIGTERM)
                agent.communicate(timeout=30)
                took = time.monotonic() - started
            finally:
                stop(agent, signal.SIGKILL)
            assert agent.returncode == 130
            print(f"stopped {took:.2f} s after SIGTERM ({' '.join(options) or 'default'})")
            return took

        # By default the claim stays recorded, to be taken up at the next start.
        took = stopped_mid_download()
        assert took < 5, took
        assert json.loads((state_dir / "current.json").read_text())["job_id"] == job_id
        assert not world.operations(job_id)[-1].done
        # --release-on-exit gives it back (SHUTDOWN), the attempt with it.
        took = stopped_mid_download("--release-on-exit")
        assert took < 5, took
    assert not (state_dir / "current.json").exists()
    ended = world.operations(job_id)[-1]
    assert (ended.metadata.state, ended.error.details["reason"]["code"]) == ("canceled", "SHUTDOWN")
    assert world.admin.get_job(job_id).status == "unclaimed"


# ---- watch ------------------------------------------------------------------------------------------------


def test_watch_prints_operations_on_own_data_and_their_executions(world: World, tmp_path: Path, served):
    root, base = served
    job_id = make_job(world, root, base)
    watcher = world.site(world.data_creds, "watch", "--json", "--interval", "0.3")
    try:
        agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", *STATS))
        assert agent.communicate(timeout=60)[1] is None and agent.returncode == 0
        [op] = world.operations(job_id)
        time.sleep(1.5)  # a few watch rounds after the end
    finally:
        out = stop(watcher)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    ops = [e["operation"] for e in events if e["event"] == "operation"]
    assert ops and all(o["id"] == op.id for o in ops)
    assert ops[-1]["done"] is True
    [execution] = [e["execution"] for e in events if e["event"] == "execution"]
    assert execution["id"] == op.result.id and execution["status"] == "succeeded"
    # --once prints the present state and exits.
    once = subprocess.run(
        [str(BIN / "nmdc-site"), "watch", "--once"],
        env=world.env(world.data_creds),
        capture_output=True,
        text=True,
    )
    assert once.returncode == 0, once.stderr
    assert f"operation {op.id}" in once.stdout and "state=succeeded" in once.stdout
    assert f"execution {op.result.id}" in once.stdout


def test_missing_credentials_are_a_usage_error(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NMDC_CLIENT")}
    result = subprocess.run(
        [str(BIN / "nmdc-site"), "watch", "--once"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "credentials" in result.stderr


# ---- inputs by role ---------------------------------------------------------------------------------------

JOIN = "import os, sys; open(os.path.join(os.environ['NMDC_OUTPUT_DIR'], 'joined.txt'), 'w').write(''.join(open(p.split('=')[-1]).read() for p in sys.argv[1:]))"
"""A command of two inputs: writes the file of `--left=PATH` followed by the file at PATH of the next argument."""


def test_run_fills_inputs_by_role_into_the_command_and_the_outputs_keep_the_group(
    world: World, tmp_path: Path, served
):
    root, base = served
    world.admin.create_workflow(
        "pair",
        inputs={"left": {"data_type": "table"}, "right": {"data_type": "table.b"}},
        required_capabilities=["stats"],
        config={"output_data_type": "joined"},
    )
    ids = {}
    for role, (name, data_type, text) in {
        "left": ("l.tsv", "table", "left-bytes\n"),
        "right": ("r.tsv", "table.b", "right-bytes\n"),
    }.items():
        (root / name).write_text(text)
        ids[role] = world.data_site.create_data_resource(
            name=name,
            url=f"{base}/{name}",
            data_type=data_type,
            size=len(text),
            checksums=[{"type": "sha256", "checksum": hashlib.sha256(text.encode()).hexdigest()}],
            group="sample-9",
        ).id
    # Right before left in the order given: the roles, not the order, decide which path goes where.
    job = world.admin.create_job("pair", inputs={"right": ids["right"], "left": ids["left"]})
    assert job.inputs["left"].id == ids["left"]
    args = run_args(tmp_path / "exec", sys.executable, "-c", JOIN, "--left={inputs.left}", "{inputs.right}")
    args[args.index(WORKFLOW)] = "pair"
    done = subprocess.run(
        [str(BIN / "nmdc-site"), *args],
        env=world.env(world.exec_creds),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [op] = world.operations(job.id)
    assert op.metadata.state == "succeeded", op.error
    [output] = world.admin.get_execution(job.id, op.result.id).outputs
    # The agent ran once and serves nothing now: the registered checksum tells what the command wrote.
    joined = b"left-bytes\nright-bytes\n"
    assert (output["size"], output["checksums"][0]["checksum"]) == (
        len(joined),
        hashlib.sha256(joined).hexdigest(),
    )
    assert output["group"] == "sample-9"


# ---- make demo --------------------------------------------------------------------------------------------


def test_the_demo_runs_end_to_end_and_cleans_up():
    """`nmdc-runtime demo` (what `make demo` runs): the stack, the sensor's job, a real run, in under 3 minutes."""
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "nmdc-runtime"), "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert time.monotonic() - started < 180
    out = result.stdout
    assert '"done": true' in out and '"state": "succeeded"' in out
    assert '"status": "succeeded"' in out and "demo finished" in out
    # Its data is served to grant holders only: refused without one, fetched by the agent with one.
    assert "without a grant: 401" in out and '"requires_grant": true' in out
    # The statistics, of the table's group, complete it for the two-input workflow, whose command gets both.
    assert "group demo-sample-1): inputs by role stats=" in out
    assert re.search(r"\d+ of 500 samples have a depth outside", out)
    home = re.search(r"starting the stack in (\S+)", out).group(1)
    assert not Path(home).exists()  # removed, and with it the demo's embedded server
