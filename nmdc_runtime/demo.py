"""`make demo`: the whole system end to end, from nothing, in one command.

It starts the stack (`nmdc-runtime dev`: embedded PostgreSQL, the API, Dagster) in a throwaway NMDC_HOME on
free ports — so it never touches, or collides with, a running `make dev` — creates an admin, a data site, an
executing site and a workflow, serves a generated table with `nmdc-site serve --require-grant` (only to
holders of an access grant), waits for the Dagster sensor to make the job, runs `nmdc-site run --once` with the
statistics example as the command (it asks the API for a grant to fetch the table) while `nmdc-site watch`
follows along, prints the finished operation and its execution as JSON, and stops everything it
started.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from nmdc_runtime.processes import free_port, stop_group, wait_for
from nmdc_site.client import NmdcClient, Operation

BIN = Path(sys.executable).parent
ADMIN = "demo-admin"
DATA_SITE = "demo-data-site"
EXEC_SITE = "demo-exec-site"
WORKFLOW = "demo-table-stats"
DATA_TYPE = "demo.table"
STACK_TIMEOUT = 90
SENSOR_TIMEOUT = 90
RUN_TIMEOUT = 60
# Settings that would point the demo at someone's own database or keys: the demo uses its own.
ISOLATED = (
    "NMDC_DATABASE_URL",
    "NMDC_DAGSTER_DATABASE_URL",
    "NMDC_JWT_SECRET",
    "NMDC_GRANT_KEYS",
    "DAGSTER_HOME",
)

_print_lock = threading.Lock()


def say(message: str) -> None:
    with _print_lock:
        print(message, flush=True)


def step(message: str, started: float) -> None:
    say(f"\n==> [{time.monotonic() - started:5.1f} s] {message}")


def _prefix_lines(stream, label: str) -> None:
    for line in iter(stream.readline, ""):
        say(f"  [{label}] {line.rstrip()}")


class Processes:
    """The processes the demo started, each in its own session, stopped in reverse order."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(
        self,
        label: str,
        argv: list[str],
        env: dict[str, str],
        *,
        log: Path | None,
        stream_stdout: bool = True,
    ) -> subprocess.Popen:
        """Start a process. Its stdout is shown prefixed by `label` (or sent to `log`); its stderr goes to
        `log`, or to our own stderr when `log` is None."""
        handle = log.open("w") if log else None
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE if stream_stdout else handle,
            stderr=handle,
            text=True,
            start_new_session=True,
        )
        if handle:
            handle.close()  # the child has its own copy
        if stream_stdout:
            threading.Thread(target=_prefix_lines, args=(proc.stdout, label), daemon=True).start()
        self.started.append((label, proc))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 30.0) -> None:
        stop_group(proc, timeout)

    def stop_all(self) -> None:
        for _label, proc in reversed(self.started):
            self.stop(proc)


def make_table(path: Path, rows: int = 500) -> Path:
    """A small, reproducible table: per-sample read depth, GC content and contig length."""
    rng = random.Random(20240501)
    lines = ["sample\tdepth\tgc_content\tcontig_length"]
    for i in range(rows):
        lines.append(
            f"s{i:04d}\t{rng.gauss(40, 8):.2f}\t{rng.uniform(0.3, 0.7):.3f}\t{int(rng.lognormvariate(8, 1))}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(path)
    return path


def run() -> int:
    """Run the demo; 0 when the operation finished with its execution."""
    started = time.monotonic()
    # The client's requests are not the story here; the steps are.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    home = Path(tempfile.mkdtemp(prefix="nmdc-demo-"))
    api_port, dagster_port, data_port, exec_port = (free_port() for _ in range(4))
    api_url = f"http://127.0.0.1:{api_port}"
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED}
    env.update(NMDC_HOME=str(home), NMDC_API_PORT=str(api_port), NMDC_DAGSTER_PORT=str(dagster_port))
    processes = Processes()
    ok = False
    try:
        step(
            f"starting the stack in {home} (API :{api_port}, Dagster UI :{dagster_port}; log: stack.log)",
            started,
        )
        stack = processes.start(
            "stack", [str(BIN / "nmdc-runtime"), "dev"], env, log=home / "stack.log", stream_stdout=False
        )
        # Like every command, on standard error (the story is standard output).
        print(f"database: the embedded server in {home / 'pg'}", file=sys.stderr, flush=True)

        def healthy() -> bool:
            if stack.poll() is not None:
                raise RuntimeError(f"the stack exited with {stack.returncode}; see {home / 'stack.log'}")
            try:
                return httpx.get(api_url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, STACK_TIMEOUT, "healthy API")
        say(f"  API healthy at {api_url}")

        step(f"creating the admin {ADMIN!r} (nmdc-runtime users create)", started)
        password = secrets.token_urlsafe(16)
        subprocess.run(
            [str(BIN / "nmdc-runtime"), "users", "create", ADMIN, "--admin", "--password-stdin"],
            input=password + "\n",
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        admin = NmdcClient(api_url, username=ADMIN, password=password)

        step("creating a data site, an executing site (capability 'stats') and a workflow", started)
        admin.create_site(DATA_SITE, name="Demo data site")
        admin.create_site(EXEC_SITE, name="Demo executing site", capabilities=["stats"])
        data_creds = admin.generate_credentials(DATA_SITE)
        exec_creds = admin.generate_credentials(EXEC_SITE)
        workflow = admin.create_workflow(
            WORKFLOW,
            name="Column statistics",
            version="1.0.0",
            data_types=[DATA_TYPE],
            required_capabilities=["stats"],
            config={"output_data_type": "demo.table-stats"},
        )
        say(f"  workflow {workflow.id}: data_types={workflow.data_types}")

        def site_env(creds) -> dict[str, str]:
            return {
                **env,
                "NMDC_API_URL": api_url,
                "NMDC_CLIENT_ID": creds.client_id,
                "NMDC_CLIENT_SECRET": creds.client_secret,
            }

        step(
            "the data site serves a generated table to grant holders only and registers it "
            "(nmdc-site serve --require-grant)",
            started,
        )
        data_dir = home / "data-site"
        make_table(data_dir / "samples.tsv")
        processes.start(
            "data-site",
            [
                str(BIN / "nmdc-site"),
                "serve",
                str(data_dir),
                "--data-type",
                DATA_TYPE,
                "--port",
                str(data_port),
                "--require-grant",
            ],
            site_env(data_creds),
            log=home / "data-site.log",
        )
        resource = wait_for(
            lambda: next(iter(admin.list_data_resources(site_id=DATA_SITE)), None), 30, "data resource"
        )
        refused = httpx.get(resource.url, timeout=10)
        say(f"  {resource.url} without a grant: {refused.status_code} {refused.json()['detail']}")

        step("the data site watches operations on its data (nmdc-site watch)", started)
        processes.start(
            "watch",
            [str(BIN / "nmdc-site"), "watch", "--interval", "1"],
            site_env(data_creds),
            log=home / "watch.log",
        )

        step("waiting for the Dagster sensor to make the job", started)
        job = wait_for(
            lambda: next(iter(admin.list_jobs(data_resource_id=resource.id)), None),
            SENSOR_TIMEOUT,
            "job",
            1.0,
        )
        say(f"  job {job.id} (workflow {job.workflow_id}, status {job.status})")

        step(
            "the executing site claims it, asks for an access grant, fetches the table, runs the statistics "
            "(nmdc-site run --once)",
            started,
        )
        command = [sys.executable, "-m", "nmdc_site.examples.stats", "{inputs}"]
        agent = processes.start(
            "exec-site",
            [
                str(BIN / "nmdc-site"),
                "run",
                "--workflow",
                WORKFLOW,
                "--once",
                "--state-dir",
                str(home / "exec-site"),
                "--port",
                str(exec_port),
                "--poll-interval",
                "1",
                "--heartbeat",
                "1",
                # The demo's data site is on this machine's loopback address, which agents refuse by default.
                "--allow-host",
                f"127.0.0.1:{data_port}",
                "--",
                *command,
            ],
            {**site_env(exec_creds), "STATS_DELAY": "3"},
            log=None,  # its log, the command's output and the download progress bar go to the terminal
        )
        agent.wait(RUN_TIMEOUT)

        operation: Operation = wait_for(
            lambda: next((op for op in admin.list_operations(job_id=job.id) if op.done), None),
            10,
            "finished op",
        )
        time.sleep(1.5)  # let the watcher print the end too
        step("the finished operation", started)
        say(json.dumps(operation.model_dump(mode="json"), indent=2))
        if operation.result is None:
            say(f"\nthe operation failed: {operation.error}")
            return 1
        execution = admin.get_execution(job.id, operation.result.id)
        step("its execution (GET /jobs/{job_id}/executions/{exec_id})", started)
        say(json.dumps(execution.model_dump(mode="json"), indent=2))
        for output in execution.outputs:
            path = home / "exec-site" / "outputs" / job.id / output["name"]
            step(f"output {output['name']} ({output['url']})", started)
            say(path.read_text())
        ok = True
        return 0
    except (TimeoutError, RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        say(f"\ndemo failed: {exc} {detail}".rstrip())
        return 1
    finally:
        step("stopping everything the demo started", started)
        processes.stop_all()
        if ok:
            shutil.rmtree(home, ignore_errors=True)
        else:
            say(f"  logs kept in {home}")
        say(f"\ndemo {'finished' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
