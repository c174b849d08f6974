"""The external system the Dagster code talks to: the runtime database, as a typed resource.

Sensors take it as a parameter, so a test passes one pointing at its own database (or at one that refuses
connections, to check that an outage fails the tick instead of looking like "nothing new"). It holds every
setting the sensors need as a field, filled once from the runtime settings by `from_settings` where the
definitions are wired (`nmdc_runtime.definitions`): nothing here reads the environment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field
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


class RuntimeDatabase(ConfigurableResource):
    """The runtime's PostgreSQL database, the rules' numbers for what the sensors write to it, and the
    thresholds of the asset checks."""

    url: str | None = Field(
        description="SQLAlchemy URL of the runtime database. None: the embedded server under `home`."
    )
    home: str = Field(description="NMDC_HOME: where the embedded server lives when `url` is None.")
    claim_lease_seconds: int = Field(gt=0, description="NMDC_CLAIM_LEASE_SECONDS.")
    max_lease_seconds: int = Field(gt=0, description="NMDC_MAX_LEASE_SECONDS.")
    operation_retention_seconds: int = Field(ge=0, description="NMDC_OPERATION_RETENTION_SECONDS.")
    idempotency_retention_seconds: int = Field(ge=0, description="NMDC_IDEMPOTENCY_RETENTION_SECONDS.")
    max_attempts: int = Field(
        ge=1, description="max_attempts of the jobs the sensors make (NMDC_MAX_ATTEMPTS)."
    )
    batch_size: int = Field(
        default=2000, gt=0, description="Data resources matched (or executions reported) per statement."
    )
    tick_budget_seconds: float = Field(
        default=20.0,
        gt=0,
        description="A tick stops starting new batches after this long; the next tick carries on.",
    )
    check_lapsed_lease_seconds: int = Field(gt=0, description="NMDC_CHECK_LAPSED_LEASE_SECONDS.")
    check_unclaimed_job_seconds: int = Field(gt=0, description="NMDC_CHECK_UNCLAIMED_JOB_SECONDS.")
    check_unmatched_data_resource_seconds: int = Field(
        gt=0, description="NMDC_CHECK_UNMATCHED_DATA_RESOURCE_SECONDS."
    )
    check_failed_operations_share: float = Field(
        ge=0, le=1, description="NMDC_CHECK_FAILED_OPERATIONS_SHARE."
    )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> RuntimeDatabase:
        """The resource for these runtime settings (the database URL is resolved at first use)."""
        # Every field but these two has a setting of the same name.
        own = {"url": settings.database_url, "home": str(settings.home)}
        shared = {
            name: getattr(settings, name)
            for name in cls.model_fields
            if name not in own and name in Settings.model_fields
        }
        return cls(**{**shared, **own, **overrides})

    def policy(self) -> Policy:
        """The numbers the rules run on."""
        return Policy.of(self)

    def resolved_url(self) -> str:
        """The database URL: `url`, else the embedded server's (started or attached to here)."""
        if self.url:
            return normalize_url(self.url)
        return embedded_runtime_url(Path(self.home))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session on the runtime database; the services it is passed to commit their own work."""
        with _database(self.resolved_url()).sessionmaker() as session:
            yield session
