"""Fixtures shared by every test: a throwaway runtime database on a real PostgreSQL server.

The server is the one the settings resolve (the embedded one under NMDC_HOME, or NMDC_DATABASE_URL's);
each test run creates its own databases there and drops them at the end, so runs never see each other.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from argon2 import profiles

from nmdc_runtime import auth
from nmdc_runtime.config import Settings
from nmdc_runtime.db import (
    Database,
    drop_database,
    embedded_base_url,
    ensure_database,
    normalize_url,
    with_database,
)
from nmdc_runtime.migrations import upgrade
from nmdc_runtime.models import Base, Tally, tally_changes


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, the controller starts the embedded server (when the settings name no external one)
    before any worker does: two workers making it at once on a fresh clone collide. The workers attach to it,
    and the controller, the last to let go, stops it at the end."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", default=None):
        return
    settings = Settings()
    if not settings.database_url:
        embedded_base_url(settings.home)


SHARED_FIXTURE_MODULES = frozenset(
    {
        "tests/e2e/test_staff_view.py",  # the API and `dagster dev`, for a story in two acts
        "tests/e2e/test_api_docs_offline.py",  # the API and a browser
        "tests/e2e/test_embedded_server.py",  # an embedded server of its own, made once
        "tests/integration/test_metrics.py",  # the API with two workers
    }
)
"""Modules whose tests share a costly module-scoped fixture: under pytest-xdist, each runs in one worker."""


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under `-n`, each test goes to the next worker free (the slowest first when they are known to be), but
    the tests of a module of SHARED_FIXTURE_MODULES go to one worker together, so that its fixture starts once.

    xdist's own way, the `xdist_group` mark with `--dist loadgroup`, marks the tests by rewriting their node
    ids, which pytest 9.2 no longer lets it do: every test ran on its own there, and the staff view's stack
    started three times.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SHARED_FIXTURE_MODULES else nodeid

    return SharedFixtureScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def cheap_hashes() -> None:
    """Argon2's cheapest parameters for the secrets tests make: the same code, without 0.2 s a hash.

    tests/unit/test_auth.py checks the production parameters themselves.
    """
    auth.use_hash_parameters(profiles.CHEAPEST)


@pytest.fixture(scope="session")
def server_url() -> str:
    """Maintenance URL of the PostgreSQL server the tests use."""
    settings = Settings()
    if settings.database_url:
        return with_database(normalize_url(settings.database_url), "postgres")
    return embedded_base_url(settings.home)


@pytest.fixture(scope="session")
def settings(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at this run's own, migrated, databases."""
    name = f"nmdc_test_{os.getpid()}_{secrets.token_hex(3)}"
    runtime_url = with_database(server_url, name)
    dagster_url = with_database(server_url, name + "_dagster")
    ensure_database(server_url, name)
    ensure_database(server_url, name + "_dagster")
    upgrade(runtime_url)
    yield Settings(
        home=tmp_path_factory.mktemp("nmdc_home"),
        database_url=runtime_url,
        dagster_database_url=dagster_url,
        jwt_secret="test-signing-key-" + secrets.token_hex(16),
    )
    drop_database(server_url, name)
    drop_database(server_url, name + "_dagster")


@pytest.fixture(scope="session")
def drop_at_exit(server_url: str) -> Iterator[Callable[[str], None]]:
    """Call it with a database's name to have it dropped when the session ends rather than at once.

    Each DROP DATABASE makes the server write and sync every file changed since its last checkpoint, which on a
    busy machine stalled the test that dropped one for up to a minute; at the end, the first drop pays for all.
    """
    names: list[str] = []
    yield names.append
    for name in names:
        drop_database(server_url, name)


@pytest.fixture
def fresh_database_url(server_url: str, drop_at_exit: Callable[[str], None]) -> str:
    """URL of a new, empty (unmigrated) database of its own, dropped at the end: for migration tests."""
    name = f"nmdc_test_mig_{os.getpid()}_{secrets.token_hex(3)}"
    ensure_database(server_url, name)
    drop_at_exit(name)
    return with_database(server_url, name)


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.database_url)
    yield db
    db.dispose()


_SEQUENCES = sa.text("SELECT schemaname || '.' || sequencename FROM pg_sequences WHERE schemaname = 'public'")


def empty_tables(database: Database) -> None:
    """Empty every runtime table and restart its sequences.

    DELETE rather than TRUNCATE: a TRUNCATE gives each table and index a new file, which costs several times
    as long on these small tables and leaves thousands of files for the server's next checkpoint to sync. One
    statement deletes from every table, so that the references between them (some tables refer to each other)
    are checked once all the rows are gone; the tallies' triggers count those deletions, so the tallies are
    emptied after it."""
    tallies = (Tally.__table__, tally_changes)
    first, *others = [table for table in Base.metadata.sorted_tables if table not in tallies]
    deletes = ", ".join(f'd{n} AS (DELETE FROM "{table.name}")' for n, table in enumerate(others))
    with database.engine.begin() as conn:
        conn.execute(sa.text(f'WITH {deletes} DELETE FROM "{first.name}"'))
        for table in tallies:
            conn.execute(sa.delete(table))
        for sequence in conn.execute(_SEQUENCES).scalars().all():
            conn.execute(sa.text("SELECT setval(:sequence, 1, false)"), {"sequence": sequence})


@pytest.fixture
def clean_database(database: Database) -> Iterator[Database]:
    """The runtime database, emptied after the test so the next one starts from nothing."""
    yield database
    empty_tables(database)


@pytest.fixture
def session(clean_database: Database):
    """A session on the emptied-after-use database; commit is the test's choice."""
    with clean_database.sessionmaker() as session:
        yield session
        session.rollback()
