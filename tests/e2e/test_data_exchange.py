"""The data exchange between sites as real processes: `nmdc-site serve --require-grant` against grants good
and bad, a protected input fetched end to end by `nmdc-site run`, and `run` against a hostile data site (a
small server in this test) that redirects to an internal service, streams past the declared size, or whose
command leaves symbolic links among its outputs."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database
from nmdc_runtime.grants import GrantKeys, issue_grant, new_key_set
from nmdc_site.client import DataResource
from tests.e2e.test_site_agent import LEASE, STATS, WORKFLOW, World, run_args, stop, write_table
from tests.integration.claim_world import site_principal
from tests.processes import free_port, live_api, wait_for
from tests.site_servers import Recorder, flood, redirect

pytestmark = pytest.mark.e2e

GRANT_KEYS = new_key_set()
"""The API's grant keys in these tests, so that a test can sign what the API would (an expired grant)."""


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live API with a LEASE-second claim lease and known grant keys."""
    with live_api(
        settings,
        tmp_path_factory.mktemp("api_home"),
        NMDC_CLAIM_LEASE_SECONDS=str(LEASE),
        NMDC_GRANT_KEYS=GRANT_KEYS,
    ) as url:
        yield url


@pytest.fixture
def world(api_url: str, clean_database: Database) -> Iterator[World]:
    with contextlib.closing(World(api_url, clean_database)) as made:
        yield made


def serve(world: World, data: Path, count: int, *options: str) -> tuple[object, dict[str, DataResource]]:
    """`nmdc-site serve DATA OPTIONS...` as site D, once it registered `count` files: (process, by name)."""
    proc = world.site(
        world.data_creds,
        "serve",
        str(data),
        *("--data-type", "table", "--port", str(free_port()), "--rescan", "0.5", *options),
    )

    def registered() -> dict[str, DataResource] | None:
        mine = list(world.admin.list_data_resources(site_id="site-d"))
        return {r.name: r for r in mine} if len(mine) == count else None

    try:
        return proc, wait_for(registered, 30, f"{count} registrations")
    except BaseException:
        stop(proc)
        raise


def sign(resource: DataResource, *, expires_in: float, owner: str = "site-d", keys: str = GRANT_KEYS) -> str:
    now = datetime.now(UTC)
    token, _ = issue_grant(
        GrantKeys.from_jwks(keys),
        issuer="nmdc-runtime",
        data_resource_id=resource.id,
        url=resource.url,
        owner_site_id=owner,
        requester=site_principal("site-e"),
        expires_at=now + timedelta(seconds=expires_in),
        now=now - timedelta(minutes=10),
    )
    return token


def get(resource: DataResource, token: str | None = None) -> httpx.Response:
    return httpx.get(resource.url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)


def test_a_protected_file_is_served_only_with_a_valid_grant_for_it(world: World, tmp_path: Path):
    data = tmp_path / "data"
    write_table(data / "a.tsv")
    write_table(data / "b.tsv", rows=5)
    proc, files = serve(world, data, 2, "--require-grant")
    try:
        a, b = files["a.tsv"], files["b.tsv"]
        assert a.requires_grant and b.requires_grant
        content = (data / "a.tsv").read_bytes()

        def refused(response: httpx.Response, status: int) -> str:
            assert response.status_code == status, response.text
            assert b"depth" not in response.content  # nothing of the file
            return response.json()["detail"]

        assert "grant is needed" in refused(get(a), 401)
        assert httpx.head(a.url).status_code == 401
        # The owner asks the API for a grant (as an executing site holding a claim would) and gets the file.
        grant = world.data_site.access(a.id)
        assert grant.url == a.url
        assert httpx.get(grant.url, headers=grant.headers).content == content
        token = grant.headers["Authorization"].removeprefix("Bearer ")
        assert "another file" in refused(get(b, token), 403)
        assert "another data site" in refused(get(a, sign(a, expires_in=60, owner="site-e")), 403)
        assert "expired" in refused(get(a, sign(a, expires_in=-60)), 401)
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        stretched = base64.urlsafe_b64encode(json.dumps({**claims, "exp": claims["exp"] + 3600}).encode())
        tampered = f"{header}.{stretched.rstrip(b'=').decode()}.{signature}"
        assert "not valid" in refused(get(a, tampered), 401)
        impostor = json.loads(new_key_set())
        impostor["keys"][0]["kid"] = json.loads(GRANT_KEYS)["keys"][0]["kid"]
        assert "not valid" in refused(get(a, sign(a, expires_in=60, keys=json.dumps(impostor))), 401)
        assert "does not publish" in refused(get(a, sign(a, expires_in=60, keys=new_key_set())), 401)
        assert get(a, sign(a, expires_in=60)).content == content  # the same, signed with the API's key
    finally:
        stop(proc)


def test_a_protected_input_is_fetched_end_to_end_by_run(world: World, tmp_path: Path):
    data = tmp_path / "data"
    write_table(data / "sample.tsv")
    proc, files = serve(world, data, 1, "--require-grant")
    agent = None
    try:
        job = world.admin.create_job(WORKFLOW, [files["sample.tsv"].id])
        assert job.data_resources[0].requires_grant
        agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", *STATS))
        out = agent.communicate(timeout=60)[0]
        assert agent.returncode == 0, out
        [op] = world.operations(job.id)
        assert op.done and op.error is None and op.result is not None
        [output] = world.admin.get_execution(job.id, op.result.id).outputs
        stats = json.loads((tmp_path / "exec" / "outputs" / job.id / output["name"]).read_text())
        assert stats["rows"] == 200
    finally:
        if agent:
            stop(agent)
        stop(proc)


def _register(world: World, url: str, data: bytes) -> str:
    resource = world.data_site.create_data_resource(
        name="input.tsv",
        url=url,
        data_type="table",
        size=len(data),
        checksums=[{"type": "sha256", "checksum": hashlib.sha256(data).hexdigest()}],
    )
    return world.admin.create_job(WORKFLOW, [resource.id]).id


def _run_against(world: World, tmp_path: Path, hostile: Recorder, job_id: str):
    """`nmdc-site run --once`, allowed to reach the hostile data site's port (and nothing else on this host)."""
    args = run_args(tmp_path / "exec", *STATS)
    args[args.index("--allow-host") + 1] = f"127.0.0.1:{hostile.port}"
    agent = world.site(world.exec_creds, *args)
    out = agent.communicate(timeout=60)[0]
    assert agent.returncode == 1, out
    [op] = world.operations(job_id)
    assert op.done and op.result is None
    assert list(world.admin.list_executions(job_id)) == []
    return op


def test_a_redirect_to_an_internal_service_reaches_nothing(world: World, tmp_path: Path):
    with Recorder() as internal, Recorder() as hostile:
        hostile.routes["/data"] = redirect(f"{internal.base}/admin?delete=everything")
        job_id = _register(world, f"{hostile.base}/data", b"0123456789")
        op = _run_against(world, tmp_path, hostile, job_id)
        assert hostile.requests and internal.requests == []
    assert op.error.code == "UNAVAILABLE" and "refused" in op.error.message
    assert str(internal.port) not in json.dumps(op.model_dump(mode="json"))


def test_data_registered_at_an_internal_address_is_unavailable_not_the_executing_site_s_fault(
    world: World, tmp_path: Path
):
    """Released as SITE_FAULT, such a URL stopped the agent that claimed it, and three drained its site."""
    with Recorder() as internal, Recorder() as hostile:
        job_id = _register(world, f"{internal.base}/admin", b"0123456789")
        op = _run_against(world, tmp_path, hostile, job_id)  # only the hostile site's port is allowed
        assert internal.requests == []
    assert op.error.code == "UNAVAILABLE" and "not a public address" in op.error.message
    assert op.metadata.state == "failed"


def test_a_data_site_streaming_past_the_declared_size_is_cut_off(world: World, tmp_path: Path):
    with Recorder() as hostile:
        hostile.routes["/data"] = flood(hostile, "/data", 30 * 1024 * 1024)
        job_id = _register(world, f"{hostile.base}/data", b"0123456789")
        op = _run_against(world, tmp_path, hostile, job_id)
    assert op.error.code == "DATA_LOSS" and "more than the declared 10 bytes" in op.error.message
    assert hostile.sent["/data"] < 30 * 1024 * 1024
    inputs = tmp_path / "exec" / "jobs" / job_id / "inputs"
    assert [p for p in inputs.rglob("*") if p.is_file()] == []  # the partial download is gone


def test_symbolic_links_are_never_published(world: World, tmp_path: Path):
    secret = tmp_path / "host" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the host's secret\n")
    # A data site's folder with links out of it: only the real file is registered or served.
    data = tmp_path / "data"
    write_table(data / "real.tsv")
    (data / "leak.tsv").symlink_to(secret)
    (data / "host-dir").symlink_to(secret.parent, target_is_directory=True)
    proc, files = serve(world, data, 1)
    try:
        real = files["real.tsv"]
        base = real.url.rsplit("/", 1)[0]
        for path in ("leak.tsv", "host-dir/secret.txt"):
            response = httpx.get(f"{base}/{path}")
            assert response.status_code == 404 and "secret" not in response.text
        # A command that leaves links among its outputs: only the real output is published.
        job = world.admin.create_job(WORKFLOW, [real.id])
        command = [
            sys.executable,
            "-c",
            "import os, pathlib; out = pathlib.Path(os.environ['NMDC_OUTPUT_DIR']); "
            "(out / 'result.txt').write_text('ok'); "
            f"os.symlink({str(secret)!r}, out / 'leak.txt'); "
            f"os.symlink({str(secret.parent)!r}, out / 'host-dir')",
        ]
        agent = world.site(world.exec_creds, *run_args(tmp_path / "exec", *command))
        out = agent.communicate(timeout=60)[0]
        assert agent.returncode == 0, out
        [op] = world.operations(job.id)
        outputs = world.admin.get_execution(job.id, op.result.id).outputs
        assert [output["name"] for output in outputs] == ["result.txt"]
    finally:
        stop(proc)


def test_neither_the_command_line_nor_secrets_in_its_output_are_published(world: World, tmp_path: Path):
    secret = "Zq8" + "x" * 10 + "Kd93" * 5
    data = tmp_path / "data"
    write_table(data / "sample.tsv")
    proc, files = serve(world, data, 1)
    try:
        resource = files["sample.tsv"]
        command = [
            sys.executable,
            "-c",
            "import sys; print('connecting with', sys.argv[1]); print('rows: 200')",
            f"--password={secret}",
        ]
        runs = {}
        for flag in ((), ("--publish-log-tail",)):
            job = world.admin.create_job(WORKFLOW, [resource.id])
            agent = world.site(
                world.exec_creds, *run_args(tmp_path / f"exec{len(flag)}", *command, options=flag)
            )
            agent.communicate(timeout=60)
            [op] = world.operations(job.id)
            runs[flag] = (op, world.admin.get_execution(job.id, op.result.id))
    finally:
        stop(proc)
    for op, execution in runs.values():
        published = json.dumps([op.model_dump(mode="json"), execution.model_dump(mode="json")])
        assert secret not in published
        assert "command" not in execution.details
    quiet = runs[()]
    assert "--password" not in json.dumps(
        [quiet[0].model_dump(mode="json"), quiet[1].model_dump(mode="json")]
    )
    assert "log_tail" not in quiet[1].details
    tail = runs[("--publish-log-tail",)][1].details["log_tail"]
    assert "rows: 200" in tail and "connecting with --password=[redacted]" in tail
