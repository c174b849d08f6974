"""`make demo`: the whole system end to end, from nothing, in one command.

It starts the stack (`nmdc-runtime dev`: embedded PostgreSQL, the API, Dagster) in a throwaway NMDC_HOME on
free ports — so it never touches, or collides with, a running `make dev` — creates an admin, a data site, an
executing site and two workflows, serves a generated table of one sample (a group) with `nmdc-site serve
--require-grant --group` (only to holders of an access grant), waits for the Dagster sensor to make the job,
runs `nmdc-site run --once` with the statistics example as the command (it asks the API for a grant to fetch
the table) while `nmdc-site watch` follows along, and prints the finished operation and its execution as JSON.
The statistics, of the table's group, complete that group for the second workflow, which takes two inputs by
role (the table and its statistics): the sensor makes its job, and `nmdc-site run` fills `{inputs.table}`
and `{inputs.stats}` into its command. Then it stops everything it started.
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
from nmdc_site.client import Job, NmdcClient, Operation

BIN = Path(sys.executable).parent
ADMIN = "demo-admin"
DATA_SITE = "demo-data-site"
EXEC_SITE = "demo-exec-site"
WORKFLOW = "demo-table-stats"
REPORT_WORKFLOW = "demo-depth-outliers"
DATA_TYPE = "demo.table"
STATS_TYPE = "demo.table-stats"
GROUP = "demo-sample-1"
OUTLIERS = r"""import json, os, sys
args = dict(arg.split("=", 1) for arg in sys.argv[1:])
depth = json.load(open(args["--stats"]))["columns"]["depth"]
low, high = depth["mean"] - 2 * depth["stdev"], depth["mean"] + 2 * depth["stdev"]
rows = [line.split("\t") for line in open(args["--table"]).read().splitlines()[1:]]
outliers = [row[0] for row in rows if not low <= float(row[1]) <= high]
with open(os.path.join(os.environ["NMDC_OUTPUT_DIR"], "depth-outliers.txt"), "w") as out:
    out.write(f"{len(outliers)} of {len(rows)} samples have a depth outside {low:.1f}..{high:.1f}: ")
    out.write(" ".join(outliers) + "\n")
"""
"""The second workflow's command (`depth_outliers.py`): the rows of the table (`--table`) whose depth lies more
than two standard deviations from the mean its statistics (`--stats`) give."""
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
    api_port, dagster_port, data_port = (free_port() for _ in range(3))
    exec_ports = {WORKFLOW: free_port(), REPORT_WORKFLOW: free_port()}
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
        report = admin.create_workflow(
            REPORT_WORKFLOW,
            name="Depth outliers",
            version="1.0.0",
            inputs={"table": {"data_type": DATA_TYPE}, "stats": {"data_type": STATS_TYPE}},
            required_capabilities=["stats"],
            config={"output_data_type": "demo.depth-outliers"},
        )
        say(f"  workflow {report.id}: inputs by role {json.dumps(report.inputs)}: one job per group")

        def site_env(creds) -> dict[str, str]:
            return {
                **env,
                "NMDC_API_URL": api_url,
                "NMDC_CLIENT_ID": creds.client_id,
                "NMDC_CLIENT_SECRET": creds.client_secret,
            }

        step(
            f"the data site serves a generated table of sample {GROUP} to grant holders only and registers it "
            f"(nmdc-site serve --require-grant --group {GROUP})",
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
                "--group",
                GROUP,
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

        def run_agent(job: Job, command: list[str], *, once: bool, **extra_env: str) -> Operation:
            """`nmdc-site run` of the executing site for `job`'s workflow (state in `exec-site/<workflow>`): the
            operation it finished. With `once` it stops after the job; else it goes on serving its outputs."""
            agent = processes.start(
                "exec-site",
                [
                    str(BIN / "nmdc-site"),
                    "run",
                    "--workflow",
                    job.workflow_id,
                    *(["--once"] if once else []),
                    "--state-dir",
                    str(home / "exec-site" / job.workflow_id),
                    "--port",
                    str(exec_ports[job.workflow_id]),
                    "--poll-interval",
                    "1",
                    "--heartbeat",
                    "1",
                    # The demo's data site and the agent that serves the statistics are on this machine's
                    # loopback address, which agents refuse by default.
                    *(
                        arg
                        for port in (data_port, *exec_ports.values())
                        for arg in ("--allow-host", f"127.0.0.1:{port}")
                    ),
                    "--",
                    *command,
                ],
                {**site_env(exec_creds), **extra_env},
                log=None,  # its log, the command's output and the download progress bar go to the terminal
            )
            if once:
                agent.wait(RUN_TIMEOUT)
            return wait_for(
                lambda: next((op for op in admin.list_operations(job_id=job.id) if op.done), None),
                RUN_TIMEOUT,
                "finished op",
                0.5,
            )

        def show_outcome(job: Job, operation: Operation) -> bool:
            """A finished operation of `job`, its execution and its outputs' contents; whether it succeeded."""
            step("the finished operation", started)
            say(json.dumps(operation.model_dump(mode="json"), indent=2))
            if operation.result is None:
                say(f"\nthe operation failed: {operation.error}")
                return False
            execution = admin.get_execution(job.id, operation.result.id)
            step("its execution (GET /jobs/{job_id}/executions/{exec_id})", started)
            say(json.dumps(execution.model_dump(mode="json"), indent=2))
            for output in execution.outputs:
                path = home / "exec-site" / job.workflow_id / "outputs" / job.id / output["name"]
                step(f"output {output['name']} ({output['url']}, group {output['group']})", started)
                say(path.read_text())
            return True

        step(
            "the executing site claims it, asks for an access grant, fetches the table, runs the statistics "
            "(nmdc-site run; it goes on to serve its outputs)",
            started,
        )
        command = [sys.executable, "-m", "nmdc_site.examples.stats", "{inputs}"]
        operation = run_agent(job, command, once=False, STATS_DELAY="3")
        time.sleep(1.5)  # let the watcher print the end too
        if not show_outcome(job, operation):
            return 1

        step(
            f"the statistics belong to group {GROUP}, like the table they were made from: with both, the group "
            f"is complete for {REPORT_WORKFLOW}, and the sensor makes its job",
            started,
        )
        job = wait_for(
            lambda: next(iter(admin.list_jobs(workflow_id=REPORT_WORKFLOW, group=GROUP)), None),
            SENSOR_TIMEOUT,
            "job of the group",
            1.0,
        )
        roles = ", ".join(f"{role}={resource.id} ({resource.name})" for role, resource in job.inputs.items())
        say(
            f"  job {job.id} (workflow {job.workflow_id}, group {job.config['group']}): inputs by role {roles}"
        )

        step(
            "the executing site runs it (nmdc-site run --once): it fetches the table from the data site and the "
            "statistics from the first agent, and fills {inputs.table} and {inputs.stats} into the command",
            started,
        )
        script = home / "depth_outliers.py"
        script.write_text(OUTLIERS)
        command = [sys.executable, str(script), "--table={inputs.table}", "--stats={inputs.stats}"]
        if not show_outcome(job, run_agent(job, command, once=True)):
            return 1
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
