"""`make docker-test`: the deployment, built and run for real, through the seed's sequence.

1. Base images made locally (no image registry is reachable here): Debian bookworm with Python, and with
   PostgreSQL, by debootstrap + `docker import` (docker/local/base-image.sh). They are kept between runs
   (`make docker-clean` removes them); so is the PostgreSQL stand-in built on the second one.
2. The project's wheels, built on the host from constraints.txt (`pip wheel`), served on loopback to the image
   build, which installs them with `--no-index --find-links`.
3. The project's image, from docker/Dockerfile with the local base, checked: non-root, a HEALTHCHECK, no local
   state or virtual environment carried in.
4. docker/compose.yaml with docker/compose.host.yaml (host networking, free loopback ports, so it runs beside
   `make dev`), until every service is healthy and the migration has exited 0.
5. The seed's sequence against both API replicas: a data site registers through api-1, the Dagster sensor makes
   the job, an executing site claims, reports and finishes through api-2, a monitoring site reads the operation
   and the execution through api-1. The Dagster webserver answers and shows the job on the `jobs` asset.
6. The stack stopped, and its containers, network, volumes and the project's image removed.

It prints the figures that docs/deploy.md quotes. Exit status 0 when every check held.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import yaml

from nmdc_runtime.processes import free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
PYTHON_BASE = ("nmdc-local/python:bookworm", "python3,python3-venv,ca-certificates")
POSTGRES_BASE = ("nmdc-local/postgres-base:bookworm", "postgresql")
POSTGRES_IMAGE = "nmdc-local/postgres:bookworm"
LONG_RUNNING = ("postgres", "api-1", "api-2", "dagster-webserver", "dagster-daemon")
HEALTHY_TIMEOUT = 300
SENSOR_TIMEOUT = 90
WORKFLOW = "stack-test-stats"
DATA_TYPE = "stack-test.table"
CAPABILITY = "stack-test"


class CheckFailed(Exception):
    """A check of the deployment did not hold."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def say(message: str) -> None:
    print(message, flush=True)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command; its output is captured, and shown when it fails."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    result = subprocess.run(argv, check=False, **kwargs)
    if result.returncode != 0:
        raise CheckFailed(
            f"{' '.join(argv[:4])} ... exited {result.returncode}:\n{result.stdout or ''}{result.stderr or ''}"
        )
    return result


class Figures:
    """Named durations and sizes, printed at the end in the order they were taken."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.values[name] = f"{time.monotonic() - started:.1f} s"
        say(f"    {name}: {self.values[name]}")

    def note(self, name: str, value: str) -> None:
        self.values[name] = value
        say(f"    {name}: {value}")


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def image_ids() -> set[str]:
    return set(run(["docker", "images", "--all", "--quiet", "--no-trunc"]).stdout.split())


def preflight() -> None:
    for tool in ("docker", "docker-compose"):
        check(shutil.which(tool), f"{tool} is not installed: `make docker-engine` installs and starts it")
    check(
        subprocess.run(["docker", "info"], capture_output=True).returncode == 0,
        "no Docker engine answers: `make docker-engine` starts one",
    )


def base_images(figures: Figures) -> None:
    """The local base images, made only when missing; the PostgreSQL stand-in on top (cached layers)."""
    for name, packages in (PYTHON_BASE, POSTGRES_BASE):
        if image_exists(name):
            figures.note(f"base image {name}", "cached")
            continue
        check(shutil.which("debootstrap"), "debootstrap is not installed: `make docker-engine` installs it")
        with figures.timed(f"base image {name} (debootstrap + docker import)"):
            run([str(REPO / "docker/local/base-image.sh"), name, packages])
    local = REPO / "docker/local"
    run(
        [
            "docker",
            "build",
            "--quiet",
            "-f",
            str(local / "postgres.Dockerfile"),
            "-t",
            POSTGRES_IMAGE,
            str(local),
        ]
    )


@contextlib.contextmanager
def wheel_server(directory: Path) -> Iterator[str]:
    """The wheels over HTTP on loopback, for pip's --find-links inside the build; yields the URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the wheel folder without a log line per request."""

    def log_message(self, *args) -> None:
        pass


def build_image(tag: str, work: Path, figures: Figures) -> set[str]:
    """Build the project's image from host-built wheels; returns the ids of every image the build made."""
    wheels = work / "wheels"
    with figures.timed("wheels built on the host (pip wheel)"):
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "--wheel-dir",
                str(wheels),
                "--constraint",
                str(REPO / "constraints.txt"),
                str(REPO),
                # The project's build backend, for pip's isolated build inside the image.
                "setuptools>=77",
                "wheel",
            ],
            cwd=work,
        )
    before = image_ids()
    with wheel_server(wheels) as url, figures.timed("project image build (docker build)"):
        built = run(
            [
                "docker",
                "build",
                # No stopped container left behind when a step fails.
                "--force-rm",
                # The build's pip reaches the wheel server on the host's loopback.
                "--network",
                "host",
                "-f",
                str(REPO / "docker/Dockerfile"),
                "--build-arg",
                f"BASE_IMAGE={PYTHON_BASE[0]}",
                "--build-arg",
                f"PIP_OPTIONS=--no-index --find-links {url}",
                "-t",
                tag,
                str(REPO),
            ],
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
    made = image_ids() - before
    context = re.search(r"Sending build context to Docker daemon\s+(\S+)", built.stdout + built.stderr)
    figures.note("build context", context.group(1) if context else "unknown")
    return made


def check_image(tag: str, figures: Figures) -> None:
    config = json.loads(run(["docker", "image", "inspect", tag]).stdout)[0]
    figures.note("image size", f"{config['Size'] / 1e6:.0f} MB")
    check(config["Config"].get("Healthcheck", {}).get("Test"), "the image has no HEALTHCHECK")
    uid = run(["docker", "run", "--rm", "--network", "none", tag, "id", "-u"]).stdout.strip()
    check(uid not in ("", "0"), f"the image runs as uid {uid!r}")
    found = run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            tag,
            "sh",
            "-c",
            "find / -xdev \\( -name jwt_secret -o -name .nmdc -o -name .venv -o -name .git \\) -print 2>/dev/null"
            " || true",
        ]
    ).stdout.split()
    check(not found, f"the image carries local state: {found}")
    say(f"    image runs as uid {uid}; no .venv, .nmdc, .git or jwt_secret inside")


class Stack:
    """The compose project: its command line, environment and containers."""

    def __init__(self, project: str, image: str) -> None:
        self.project = project
        self.ports = {name: free_port() for name in ("postgres", "api-1", "api-2", "ui")}
        self.env = {
            **os.environ,
            "NMDC_IMAGE": image,
            "POSTGRES_IMAGE": POSTGRES_IMAGE,
            "POSTGRES_PASSWORD": secrets.token_hex(24),
            "NMDC_JWT_SECRET": secrets.token_urlsafe(48),
            "POSTGRES_PORT": str(self.ports["postgres"]),
            "NMDC_API_1_PORT": str(self.ports["api-1"]),
            "NMDC_API_2_PORT": str(self.ports["api-2"]),
            "DAGSTER_UI_PORT": str(self.ports["ui"]),
        }
        self.api_1 = f"http://127.0.0.1:{self.ports['api-1']}"
        self.api_2 = f"http://127.0.0.1:{self.ports['api-2']}"
        self.ui = f"http://127.0.0.1:{self.ports['ui']}"

        self.files = [REPO / "docker/compose.yaml", REPO / "docker/compose.host.yaml"]
        self.healthy_at: dict[str, float] = {}
        self.starting: subprocess.Popen | None = None

    def command(self, *args: str) -> list[str]:
        argv = ["docker-compose", "--project-name", self.project, "--ansi", "never"]
        for path in self.files:
            argv += ["--file", str(path)]
        return [*argv, *args]

    def compose(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run(self.command(*args), env=self.env, **kwargs)

    def resolve(self, work: Path) -> None:
        """Use the two files merged, less the published ports of host-networked services.

        docker-compose 1.29 (Debian's) refuses published ports with host networking, where the Docker engine and
        Compose v2 discard them with a warning; this applies that rule to the merged files. The result holds the
        stack's secrets: it stays in the test's private folder, removed at the end.
        """
        merged = yaml.safe_load(self.compose("config").stdout)
        for service in merged["services"].values():
            if service.get("network_mode") == "host":
                service.pop("ports", None)
        path = work / "compose.resolved.yaml"
        path.write_text(yaml.safe_dump(merged, sort_keys=False))
        path.chmod(0o600)
        self.files = [path]

    def states(self) -> dict[str, dict]:
        """Each service's container state, by service name, in one `docker inspect` (polled every second)."""
        label = f"label=com.docker.compose.project={self.project}"
        containers = run(["docker", "ps", "--all", "--quiet", "--filter", label]).stdout.split()
        if not containers:
            return {}
        found = json.loads(run(["docker", "inspect", *containers]).stdout)
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c["State"] for c in found}

    def healthy(self) -> bool:
        states = self.states()
        migrate = states.get("migrate", {})
        if migrate.get("Status") == "exited":
            check(migrate.get("ExitCode") == 0, f"the migration exited {migrate.get('ExitCode')}")
        states = {service: states.get(service, {}) for service in LONG_RUNNING}
        for service, state in states.items():
            check(state.get("Status") != "exited", f"{service} exited with {state.get('ExitCode')}")
            if state.get("Health", {}).get("Status") == "healthy":
                self.healthy_at.setdefault(service, time.monotonic())
        # An unhealthy check is not final: on a busy host a slow probe fails, and the next one may pass.
        return migrate.get("Status") == "exited" and all(
            state.get("Health", {}).get("Status") == "healthy" for state in states.values()
        )

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes of this project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind in (["ps", "--all"], ["network", "ls"], ["volume", "ls"]):
            found += run(["docker", *kind, "--quiet", "--filter", label]).stdout.split()
        return found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(http: httpx.Client, url: str, **form: str) -> str:
    answer = http.post(url + "/token", data=form)
    check(answer.status_code == 200, f"POST {url}/token: {answer.status_code} {answer.text}")
    return answer.json()["access_token"]


def expect(answer: httpx.Response, status: int) -> dict:
    request = answer.request
    check(
        answer.status_code == status,
        f"{request.method} {request.url}: {answer.status_code}, not {status}: {answer.text[:500]}",
    )
    return answer.json()


def sequence(stack: Stack, figures: Figures) -> None:
    """The seed's sequence: register through api-1, the sensor's job, claim and finish through api-2, read back."""
    api_1, api_2 = stack.api_1, stack.api_2
    password = secrets.token_urlsafe(16)
    # Staff bootstrap the first admin with the CLI inside a running container, as docs/deploy.md says.
    stack.compose(
        "exec", "-T", "api-1", "nmdc-runtime", "users", "create", "stack-admin", "--admin", "--password-stdin",
        input=password + "\n",
    )  # fmt: skip
    with httpx.Client(timeout=30) as http:
        admin = bearer(token(http, api_1, grant_type="password", username="stack-admin", password=password))
        credentials = {}
        for site, capabilities in (("data-site", []), ("exec-site", [CAPABILITY]), ("monitor-site", [])):
            expect(
                http.post(
                    api_1 + "/sites",
                    json={"id": site, "name": site, "capabilities": capabilities},
                    headers=admin,
                ),
                201,
            )
            credentials[site] = expect(
                http.post(f"{api_1}/sites/{site}:generateCredentials", headers=admin), 201
            )
        workflow = {
            "id": WORKFLOW,
            "name": "Table statistics",
            "version": "1.0.0",
            "data_types": [DATA_TYPE],
            "required_capabilities": [CAPABILITY],
            "config": {"columns": "all"},
            "enabled": True,
        }
        expect(http.post(api_2 + "/workflows", json=workflow, headers=admin), 201)

        def site_token(site: str, url: str) -> dict[str, str]:
            creds = credentials[site]
            return bearer(
                token(
                    http,
                    url,
                    grant_type="client_credentials",
                    client_id=creds["client_id"],
                    client_secret=creds["client_secret"],
                )
            )

        # Tokens from one replica are good on the other: they share NMDC_JWT_SECRET.
        data_site = site_token("data-site", api_2)
        exec_site = site_token("exec-site", api_2)
        monitor_site = site_token("monitor-site", api_1)

        started = time.monotonic()
        reads = {
            "name": "samples.tsv",
            "url": "https://data-site.example.org/samples.tsv",
            "data_type": DATA_TYPE,
            "size": 2048,
            "checksums": [{"type": "sha256", "checksum": "ab" * 32}],
        }
        data_resource = expect(
            http.post(
                api_1 + "/data_resources", json=reads, headers={**data_site, "Idempotency-Key": "samples-1"}
            ),
            201,
        )

        def claimable() -> dict | None:
            page = expect(http.get(api_2 + "/jobs", params={"claimable": "true"}, headers=exec_site), 200)
            for job in page["resources"]:
                if [dr["id"] for dr in job["config"]["data_resources"]] == [data_resource["id"]]:
                    return job
            return None

        job = wait_for(claimable, SENSOR_TIMEOUT, "the sensor's job", interval=0.5)
        figures.note("registered (api-1) -> job claimable (api-2)", f"{time.monotonic() - started:.1f} s")
        check(job["workflow_id"] == WORKFLOW, f"the job is of workflow {job['workflow_id']}")

        operation = expect(http.post(f"{api_2}/jobs/{job['id']}:claim", headers=exec_site), 201)
        beat = expect(
            http.patch(
                f"{api_2}/operations/{operation['id']}",
                json={"metadata": {"progress": 50}},
                headers=exec_site,
            ),
            200,
        )
        ended = datetime.now(UTC)
        execution = expect(
            http.post(
                f"{api_2}/jobs/{job['id']}/executions",
                json={
                    "operation_id": operation["id"],
                    "status": "succeeded",
                    "started_at": (ended - timedelta(seconds=5)).isoformat(),
                    "ended_at": ended.isoformat(),
                    "outputs": [
                        {
                            "name": "samples.stats.json",
                            "url": "https://exec-site.example.org/out/samples.stats.json",
                            "data_type": "stack-test.stats",
                            "size": 120,
                            "checksums": [{"type": "md5", "checksum": "cd" * 16}],
                        }
                    ],
                },
                headers={**exec_site, "Idempotency-Key": f"run-{job['id']}"},
            ),
            201,
        )
        finished = expect(
            http.patch(
                f"{api_2}/operations/{operation['id']}",
                json={
                    "metadata": {**beat["metadata"], "progress": 100},
                    "done": True,
                    "result": {"execution_id": execution["id"]},
                },
                headers=exec_site,
            ),
            200,
        )
        check(
            finished["done"] and finished["result"] == execution, f"the operation did not finish: {finished}"
        )

        followed = expect(
            http.get(
                api_1 + "/operations", params={"data_resource_id": data_resource["id"]}, headers=monitor_site
            ),
            200,
        )["resources"]
        check([op["id"] for op in followed] == [operation["id"]], f"operations on the data: {followed}")
        check(followed[0]["result"]["id"] == execution["id"], "the operation does not carry the execution")
        read = expect(
            http.get(f"{api_1}/jobs/{job['id']}/executions/{execution['id']}", headers=monitor_site), 200
        )
        check(read == execution, f"the execution read back differs: {read}")
        job_now = expect(http.get(f"{api_1}/jobs/{job['id']}", headers=monitor_site), 200)
        check(job_now["status"] == "succeeded", f"the job is {job_now['status']}")
        figures.note("sequence, registration -> execution read back", f"{time.monotonic() - started:.1f} s")

        # Each replica counted its own part of the story: the claim only on api-2, the registration only on api-1.
        def counted(url: str, route: str) -> bool:
            text = expect_text(http.get(url + "/metrics", headers=admin))
            return f'route="{route}"' in text

        check(counted(api_2, "/jobs/{job_id}:claim"), "api-2's /metrics does not count the claim")
        check(not counted(api_1, "/jobs/{job_id}:claim"), "api-1's /metrics counts a claim it never answered")
        check(counted(api_1, "/data_resources"), "api-1's /metrics does not count the registration")
        check(
            not counted(api_2, "/data_resources"), "api-2's /metrics counts a registration it never answered"
        )
        say("    each replica's /metrics counts only the requests it answered")

        dagster_shows_job(http, stack.ui, job["id"])


def expect_text(answer: httpx.Response) -> str:
    check(answer.status_code == 200, f"{answer.request.url}: {answer.status_code} {answer.text[:300]}")
    return answer.text


JOBS_ASSET_QUERY = """
query ($partition: String!) {
  assetOrError(assetKey: {path: ["jobs"]}) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: [$partition], limit: 20) {
        partition
        metadataEntries { label ... on JsonMetadataEntry { jsonString } }
      }
    }
  }
}
"""


def dagster_shows_job(http: httpx.Client, ui: str, job_id: str) -> None:
    """The webserver answers, and its `jobs` asset has the sensor's materialization naming the job."""
    info = http.get(ui + "/server_info")
    check(info.status_code == 200, f"the Dagster webserver answered {info.status_code}")
    version = info.json().get("dagster_version")

    def materialized() -> bool:
        answer = http.post(
            ui + "/graphql", json={"query": JOBS_ASSET_QUERY, "variables": {"partition": WORKFLOW}}
        )
        check(
            answer.status_code == 200, f"Dagster GraphQL answered {answer.status_code}: {answer.text[:300]}"
        )
        asset = answer.json()["data"]["assetOrError"]
        check(asset["__typename"] == "Asset", f"no `jobs` asset in Dagster: {asset}")
        for event in asset["assetMaterializations"]:
            for entry in event["metadataEntries"]:
                if entry["label"] == "job_ids" and job_id in json.loads(entry.get("jsonString") or "[]"):
                    return True
        return False

    wait_for(materialized, 30, "the job on Dagster's `jobs` asset", interval=1)
    say(f"    Dagster webserver {version} shows job {job_id} on the `jobs` asset (partition {WORKFLOW})")


def check_loopback_only(stack: Stack) -> None:
    """Every listener of the stack binds to loopback (host networking: a wildcard bind would face the network)."""
    wanted = {stack.ports[name] for name in ("postgres", "api-1", "api-2", "ui")}
    listening = [
        conn
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in wanted
    ]
    check({conn.laddr.port for conn in listening} == wanted, f"not every service listens: {listening}")
    exposed = [f"{conn.laddr.ip}:{conn.laddr.port}" for conn in listening if conn.laddr.ip != "127.0.0.1"]
    check(not exposed, f"listening beyond loopback: {exposed}")
    say("    PostgreSQL, both API replicas and the Dagster UI listen on 127.0.0.1 only")


def memory(stack: Stack, figures: Figures) -> None:
    """Each long-running service's memory use after the sequence, for sizing."""
    for service in LONG_RUNNING:
        container = stack.compose("ps", "--quiet", service).stdout.strip()
        used = run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container]).stdout
        figures.note(f"memory of {service}", used.split("/")[0].strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image", help="run the stack on this existing image of the project (kept) instead of building one"
    )
    args = parser.parse_args()
    figures = Figures()
    run_id = f"{os.getpid()}{secrets.token_hex(2)}"
    tag = args.image or f"nmdc-runtime:stack-test-{run_id}"
    work = Path(tempfile.mkdtemp(prefix="nmdc-stack-test-"))
    stack = Stack(f"nmdcstack{run_id}", tag)
    made_images: set[str] = set()
    started = time.monotonic()
    ok = False
    try:
        preflight()
        say("==> base images")
        base_images(figures)
        say("==> the project's image")
        if not args.image:
            made_images = build_image(tag, work, figures)
        check_image(tag, figures)
        say(f"==> the stack (project {stack.project}, ports {stack.ports})")
        stack.resolve(work)
        up = time.monotonic()
        with figures.timed("stack up -> every service healthy, migration done"):
            # In the background: `up` itself waits for PostgreSQL's health and the migration's end, and the
            # times at which services turn healthy are taken meanwhile.
            with (work / "up.log").open("w") as log:
                stack.starting = starting = subprocess.Popen(
                    stack.command("up", "--detach", "--no-build"), env=stack.env, stdout=log, stderr=log
                )

            def ready() -> bool:
                if starting.poll() not in (None, 0):
                    raise CheckFailed(f"docker-compose up failed:\n{(work / 'up.log').read_text()}")
                return stack.healthy() and starting.poll() == 0

            wait_for(ready, HEALTHY_TIMEOUT, "a healthy stack")
        for service, at in sorted(stack.healthy_at.items(), key=lambda item: item[1]):
            figures.note(f"  {service} healthy after", f"{at - up:.1f} s")
        check_loopback_only(stack)
        say("==> the seed's sequence across both API replicas")
        sequence(stack, figures)
        memory(stack, figures)
        ok = True
    except (CheckFailed, TimeoutError) as exc:
        say(f"\nFAILED: {exc}")
        with contextlib.suppress(CheckFailed):
            say(stack.compose("logs", "--no-color", "--tail", "60").stdout)
            say(stack.compose("ps").stdout)
    finally:
        say("==> removing what the test made")
        with figures.timed("stack down, containers, network, volumes and image removed"):
            if stack.starting is not None and stack.starting.poll() is None:
                # `down` while `up` still creates containers would leave some behind.
                stack.starting.wait(120)
            with contextlib.suppress(CheckFailed):
                stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20")
            # Removing one image of a build's chain can take others with it: the rest may be gone already.
            for image in ([] if args.image else [tag]) + sorted(made_images):
                subprocess.run(["docker", "image", "rm", "--force", image], capture_output=True)
            shutil.rmtree(work, ignore_errors=True)
        left = stack.leftovers() + sorted(made_images & image_ids())
        if left:
            say(f"left behind: {left}")
            ok = False
    say("\nfigures:")
    for name, value in figures.values.items():
        say(f"  {name:<62} {value}")
    say(f"\ndocker-test {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
