"""The external system the Dagster code talks to: the runtime database, and the runtime settings with it.

Sensors, the asset and the checks take a `RuntimeDatabase` as their `runtime` resource, so a test passes one
pointing at its own database (or at one that refuses connections, to check that an outage fails the tick
instead of looking like "nothing new"), or with its own thresholds.

It carries the runtime `Settings` whole, as the one object the API and the CLI are given too: a setting the
sensors need is a field of `Settings` (`nmdc_runtime.config`), read where it is used as `runtime.settings.<name>`,
and nothing here restates it. Dagster takes the resource as a plain Python object (`ResourceParam`), since its
config system cannot hold `Settings` (paths, secrets); the price is that the UI does not list the settings'
values, which also keeps the database URL's password and the signing keys out of it. It is made once where the
definitions are wired (`nmdc_runtime.definitions`): nothing here reads the environment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database, embedded_runtime_url, normalize_url
from nmdc_runtime.domain.policy import Policy

_databases: dict[str, Database] = {}
_lock = threading.Lock()


def _database(url: str) -> Database:
    # One engine per URL and process: the code server evaluates every tick in the same process, and
    # a pool that outlives ticks spares a connection set-up each time.
    with _lock:
        database = _databases.get(url)
        if database is None:
            database = Database(
                url,
                pool_size=2,
                max_overflow=4,
                # Fail a tick within seconds when the server is gone, rather than hang the daemon.
                connect_args={"options": "-c timezone=UTC", "connect_timeout": 5},
            )
            _databases[url] = database
        return database


@dataclass(frozen=True)
class RuntimeDatabase:
    """The runtime's PostgreSQL database, with the settings the sensors, the asset and the checks read (the
    rules' numbers, the checks' thresholds) and how much the data resources sensor does per statement and tick."""

    settings: Settings
    batch_size: int = 2000
    """Data resources matched (or backfilled) per statement."""
    tick_budget_seconds: float = 20.0
    """A tick stops starting new batches after this long; the next tick carries on."""

    def policy(self) -> Policy:
        """The numbers the rules run on."""
        return self.settings.policy()

    def resolved_url(self) -> str:
        """The database URL: NMDC_DATABASE_URL, else the embedded server's (started or attached to here)."""
        if self.settings.database_url:
            return normalize_url(self.settings.database_url)
        return embedded_runtime_url(Path(self.settings.home))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session on the runtime database; the services it is passed to commit their own work."""
        with _database(self.resolved_url()).sessionmaker() as session:
            yield session
