"""`nmdc-runtime` bootstraps the database: against a URL given in the environment and the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from nmdc_runtime import cli
from nmdc_runtime.auth import verify_secret
from nmdc_runtime.config import Settings, get_settings
from nmdc_runtime.db import Database
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.models import DataResource, Site, SiteClient, User, UserSiteAdmin
from tests.processes import embedded_home

CLI = [sys.executable, "-m", "nmdc_runtime.cli"]


def run_cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    """`nmdc-runtime ARGS` in this process, through the script's own `main` (its exit codes, its one-line
    errors), with no NMDC_ setting but `env`'s: the exit code and the two streams, as `run_process` gives them.

    A process of its own costs over a second of imports a call; what needs one (the streams of a real process,
    the embedded server's lifecycle) uses `run_process`."""
    unset = {key: None for key in os.environ if key.startswith("NMDC_")}
    argv = sys.argv
    get_settings.cache_clear()
    with CliRunner().isolation(input=stdin, env={**unset, **env}) as (stdout, stderr, _):
        sys.argv = ["nmdc-runtime", *args]
        try:
            cli.main()
            code = 0
        except SystemExit as stopped:
            code = stopped.code if isinstance(stopped.code, int) else 1
        finally:
            sys.argv = argv
            get_settings.cache_clear()
        return subprocess.CompletedProcess(
            CLI + args, code, stdout.getvalue().decode(), stderr.getvalue().decode()
        )


def run_process(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    """`nmdc-runtime ARGS` as a process of its own, with no NMDC_ setting but `env`'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NMDC_")}
    return subprocess.run(
        CLI + args, env={**clean, **env}, input=stdin, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def url_env(settings: Settings, clean_database: Database, tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI pointed at this run's database by NMDC_DATABASE_URL."""
    return {"NMDC_DATABASE_URL": settings.database_url, "NMDC_HOME": str(tmp_path / "home")}


def test_db_upgrade_is_idempotent(url_env):
    for _ in range(2):
        result = run_cli(["db", "upgrade"], url_env)
        assert result.returncode == 0, result.stderr


def test_sites_create_prints_one_json_object_with_working_credentials(url_env, clean_database):
    result = run_cli(["sites", "create", "site-e", "--name", "Site E", "--capability", "gpu"], url_env)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == {"site_id", "client_id", "client_secret"}
    assert printed["site_id"] == "site-e"
    with clean_database.session() as session:
        site = session.get(Site, "site-e")
        client = session.get(SiteClient, printed["client_id"])
        assert (site.name, site.capabilities) == ("Site E", ["gpu"])
        assert client.site_id == "site-e"
        # Only a hash is stored, and it matches the secret shown once.
        assert printed["client_secret"] not in client.secret_hash
        assert verify_secret(client.secret_hash, printed["client_secret"])


def test_users_create_reads_the_password_from_stdin_and_stores_a_hash(url_env, clean_database):
    assert run_cli(["sites", "create", "site-d"], url_env).returncode == 0
    result = run_cli(
        ["users", "create", "alice", "--admin", "--site-admin-of", "site-d", "--password-stdin"],
        url_env,
        stdin="correct horse battery\n",
    )
    assert result.returncode == 0, result.stderr
    with clean_database.session() as session:
        user = session.get(User, "alice")
        assert user.admin is True
        assert "correct horse" not in user.password_hash
        assert verify_secret(user.password_hash, "correct horse battery")
        admins = session.scalars(
            sa.select(UserSiteAdmin.site_id).where(UserSiteAdmin.username == "alice")
        ).all()
        assert admins == ["site-d"]


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["sites", "create", "bad id with spaces"], ""),
        (["sites", "create", "site-x", "--capability", "no spaces please"], ""),
        (["users", "create", "bob"], "password123\n"),  # no --password-stdin
        (["users", "create", "bob", "--password-stdin"], "short\n"),
        (["users", "create", "bob", "--site-admin-of", "no-such-site", "--password-stdin"], "password123\n"),
        (["sites", "create"], ""),
        (["sites", "frobnicate"], ""),
    ],
)
def test_bad_arguments_exit_2_with_a_message(url_env, args, stdin):
    result = run_cli(args, url_env, stdin=stdin)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip()
    assert result.stdout == ""


def test_existing_site_exits_1_and_changes_nothing(url_env, clean_database):
    first = json.loads(run_cli(["sites", "create", "site-d"], url_env).stdout)
    again = run_cli(["sites", "create", "site-d", "--name", "Other"], url_env)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    with clean_database.session() as session:
        assert session.get(Site, "site-d").name == "site-d"
        clients = session.scalars(sa.select(SiteClient.client_id)).all()
        assert clients == [first["client_id"]]


@pytest.fixture
def home() -> Iterator[Path]:
    """NMDC_HOME for an embedded server of the test's own."""
    with embedded_home() as folder:
        yield folder


def test_embedded_default_starts_a_server_under_nmdc_home_and_stops_it(home: Path):
    """With no NMDC_DATABASE_URL the CLI starts an embedded server in NMDC_HOME, and it is gone afterwards."""
    env = {"NMDC_HOME": str(home)}
    created = run_process(["sites", "create", "site-d"], env)
    assert created.returncode == 0, created.stderr
    assert (home / "pg" / "PG_VERSION").exists()
    # The server stopped with the last process that used it...
    assert not (home / "pg" / "postmaster.pid").exists()
    # ...and its data is still there for the next process, which starts it again.
    again = run_process(["sites", "create", "site-d"], env)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_a_second_process_attaches_to_the_running_embedded_server(home: Path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NMDC_")}, "NMDC_HOME": str(home)}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from nmdc_runtime.config import Settings; from nmdc_runtime.db import resolve_urls;"
            "resolve_urls(Settings()); print('up', flush=True); sys.stdin.readline()",
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "up"
        pid_file = home / "pg" / "postmaster.pid"
        server_pid = pid_file.read_text().split()[0]
        assert run_process(["sites", "create", "site-d"], {"NMDC_HOME": str(home)}).returncode == 0
        # Same server before and after; the CLI's exit did not stop it, since the holder still uses it.
        assert pid_file.read_text().split()[0] == server_pid
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    assert not (home / "pg" / "postmaster.pid").exists()


def test_credentials_lifecycle_on_the_command_line(url_env, clean_database):
    created = json.loads(run_cli(["sites", "create", "site-e"], url_env).stdout)
    listed = run_cli(["sites", "clients", "site-e", "--json"], url_env)
    assert listed.returncode == 0, listed.stderr
    (client,) = json.loads(listed.stdout)
    assert (client["client_id"], client["revoked_at"]) == (created["client_id"], None)
    assert created["client_secret"] not in listed.stdout

    revoked = run_cli(["sites", "revoke", "site-e", created["client_id"]], url_env)
    assert revoked.returncode == 0, revoked.stderr
    with clean_database.session() as session:
        assert session.get(SiteClient, created["client_id"]).revoked_at is not None
    (client,) = json.loads(run_cli(["sites", "clients", "site-e", "--json"], url_env).stdout)
    assert client["revoked_at"] is not None

    assert json.loads(run_cli(["sites", "disable", "site-e"], url_env).stdout)["disabled"] is True
    with clean_database.session() as session:
        assert session.get(Site, "site-e").disabled_at is not None
    assert json.loads(run_cli(["sites", "enable", "site-e"], url_env).stdout)["disabled"] is False

    assert (
        run_cli(["users", "create", "bob", "--password-stdin"], url_env, stdin="long-password\n").returncode
        == 0
    )
    assert json.loads(run_cli(["users", "disable", "bob"], url_env).stdout)["disabled"] is True
    with clean_database.session() as session:
        assert session.get(User, "bob").disabled_at is not None
    assert json.loads(run_cli(["users", "enable", "bob"], url_env).stdout)["disabled"] is False

    for args in (
        ["sites", "revoke", "site-e", "sc-nosuch"],
        ["sites", "disable", "nosuch"],
        ["users", "enable", "nosuch"],
    ):
        failed = run_cli(args, url_env)
        assert failed.returncode == 1, args
        assert failed.stdout == ""
        assert failed.stderr.strip().splitlines()[-1].startswith("error: "), failed.stderr
        assert "Traceback" not in failed.stderr


def test_staff_commands_make_and_list_workflows_sites_jobs_and_operations(url_env, clean_database, settings):
    from nmdc_runtime.services import catalog as catalog_service
    from nmdc_runtime.services import claims as claims_service
    from nmdc_runtime.services import operations as operations_service

    assert run_cli(["--version"], url_env).stdout.startswith("nmdc-runtime ")
    made = run_cli(
        [
            "workflows",
            "create",
            "stats",
            "--data-type",
            "tsv",
            "--capability",
            "stats",
            "--lease-seconds",
            "3600",
            "--config",
            '{"threads": 2}',
        ],
        url_env,
    )
    assert made.returncode == 0, made.stderr
    workflow = json.loads(made.stdout)
    assert (workflow["id"], workflow["data_types"], workflow["lease_seconds"]) == ("stats", ["tsv"], 3600)
    assert run_cli(["workflows", "create", "stats"], url_env).returncode == 1
    bad = run_cli(["workflows", "create", "x", "--config", '{"data_resources": 1}'], url_env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert json.loads(run_cli(["workflows", "disable", "stats"], url_env).stdout)["enabled"] is False
    assert json.loads(run_cli(["workflows", "enable", "stats"], url_env).stdout)["enabled"] is True
    (listed,) = json.loads(run_cli(["workflows", "list", "--json"], url_env).stdout)
    assert listed["id"] == "stats"

    assert run_cli(["sites", "create", "site-e", "--capability", "stats"], url_env).returncode == 0
    sites = json.loads(run_cli(["sites", "list", "--json"], url_env).stdout)
    assert [s["id"] for s in sites] == ["site-e"] and "client_secret" not in sites[0]
    header, row = run_cli(["sites", "list"], url_env).stdout.splitlines()
    assert header.split("\t") == ["id", "capabilities", "disabled_at", "name"]
    assert row.split("\t") == ["site-e", "stats", "", "site-e"]

    with clean_database.session() as session:
        session.add(
            DataResource(id="dr-1", site_id="site-e", name="a", url="https://d/a", data_type="tsv", size=1)
        )
    policy = settings.policy()
    with clean_database.sessionmaker() as session:
        first = catalog_service.create_job(
            session,
            workflow_id="stats",
            data_resource_ids=["dr-1"],
            config=None,
            max_attempts=3,
            created_by="t",
        )
        catalog_service.create_job(
            session,
            workflow_id="stats",
            data_resource_ids=["dr-1"],
            config=None,
            max_attempts=3,
            created_by="t",
        )
        claim = claims_service.claim_job(session, job_id=first.id, site_id="site-e", policy=policy)
    unclaimed = json.loads(run_cli(["jobs", "list", "--status", "unclaimed", "--json"], url_env).stdout)
    assert len(unclaimed) == 1 and unclaimed[0]["config"]["threads"] == 2
    assert len(json.loads(run_cli(["jobs", "list", "--json", "--limit", "1"], url_env).stdout)) == 1
    assert run_cli(["jobs", "list", "--status", "nosuch"], url_env).returncode == 2
    (open_op,) = json.loads(run_cli(["operations", "list", "--open", "--json"], url_env).stdout)
    # The API's Operation, as GET /operations/{id} shows it.
    assert (open_op["id"], open_op["done"]) == (claim.operation.id, False)
    assert (open_op["metadata"]["state"], open_op["metadata"]["job_id"]) == ("running", first.id)
    with clean_database.sessionmaker() as session:
        operations_service.patch_operation(
            session,
            op_id=claim.operation.id,
            principal=Principal(kind="site_client", name="c", site_id="site-e"),
            policy=policy,
            error={"code": "INTERNAL", "message": "exit\tstatus 1\n"},
        )
    header, row = run_cli(["operations", "list"], url_env).stdout.splitlines()
    assert header.split("\t") == [
        "id",
        "job_id",
        "workflow_id",
        "site_id",
        "state",
        "attempt",
        "lease_expire_time",
        "error_code",
        "error_message",
    ]
    cells = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert (cells["id"], cells["state"], cells["error_code"]) == (claim.operation.id, "failed", "INTERNAL")
    assert cells["error_message"] == "exit status 1 "
    assert run_cli(["operations", "list", "--open"], url_env).stdout.splitlines() == [header]
    header, *rows = run_cli(["workflows", "list"], url_env).stdout.splitlines()
    assert rows == ["stats\ttrue\ttsv\tstats\t3600\tstats"]


def test_workflows_create_takes_inputs_by_role(url_env):
    """`--input ROLE=DATA_TYPE` and `--optional-input` make `POST /workflows`'s `inputs`, checked as it checks
    them."""
    by_role = run_cli(
        [
            *("workflows", "create", "mags", "--input", "contigs=fna", "--input", "mapping=bam"),
            *("--optional-input", "notes=txt"),
        ],
        url_env,
    )
    assert by_role.returncode == 0, by_role.stderr
    made_by_role = json.loads(by_role.stdout)
    assert made_by_role["inputs"] == {
        "contigs": {"data_type": "fna", "optional": False},
        "mapping": {"data_type": "bam", "optional": False},
        "notes": {"data_type": "txt", "optional": True},
    }
    assert sorted(made_by_role["data_types"]) == ["bam", "fna", "txt"]
    for wrong, says in (
        (["--input", "contigs"], "--input takes ROLE=DATA_TYPE"),
        (["--input", "a=fna", "--optional-input", "a=bam"], "the role 'a' is given twice"),
        (["--optional-input", "a=fna"], "inputs"),  # no required role
        (["--input", "a=fna", "--data-type", "fna"], "either data_types or inputs"),
    ):
        refused = run_cli(["workflows", "create", "w2", *wrong], url_env)
        assert refused.returncode == 2 and says in refused.stderr, (wrong, refused.stderr)
