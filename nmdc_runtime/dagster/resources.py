"""The external system the Dagster code talks to: the runtime database, as a typed resource.

Sensors take it as a parameter, so a test passes one pointing at its own database (or at one that refuses
connections, to check that an outage fails the tick instead of looking like "nothing new").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy.orm import Session

from nmdc_runtime.config import Settings, get_settings
from nmdc_runtime.db import Database, normalize_url, resolve_urls

_databases: dict[str, Database] = {}


def _default(setting: str):
    # The thresholds' defaults are the settings' own, written once in Settings.
    return Settings.model_fields[setting].default


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
    """The runtime's PostgreSQL database, and the settings for the rows the sensors write to it.

    Unset fields come from the runtime settings (`NMDC_*` environment variables), so the same
    definitions run under `make dev`, in Docker and in tests.
    """

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the runtime database. Unset: NMDC_DATABASE_URL, else the embedded server.",
    )
    max_attempts: int | None = Field(
        default=None, description="max_attempts of the jobs the sensors make. Unset: NMDC_MAX_ATTEMPTS."
    )
    batch_size: int = Field(
        default=2000, gt=0, description="Data resources matched (or executions reported) per statement."
    )
    tick_budget_seconds: float = Field(
        default=20.0,
        gt=0,
        description="A tick stops starting new batches after this long; the next tick carries on.",
    )

    check_lapsed_lease_seconds: int = Field(
        default=_default("check_lapsed_lease_seconds"),
        gt=0,
        description="lapsed_leases_reaped fails on a lease lapsed longer ago than this (NMDC_CHECK_LAPSED_LEASE_SECONDS).",
    )
    check_unclaimed_job_seconds: int = Field(
        default=_default("check_unclaimed_job_seconds"),
        gt=0,
        description="unclaimed_jobs_claimed fails on an unclaimed job older than this (NMDC_CHECK_UNCLAIMED_JOB_SECONDS).",
    )
    check_unmatched_data_resource_seconds: int = Field(
        default=_default("check_unmatched_data_resource_seconds"),
        gt=0,
        description=(
            "data_resources_matched fails on a data resource waiting longer for the sensor "
            "(NMDC_CHECK_UNMATCHED_DATA_RESOURCE_SECONDS)."
        ),
    )
    check_failed_operations_share: float = Field(
        default=_default("check_failed_operations_share"),
        ge=0,
        le=1,
        description=(
            "failed_operations_share fails above this share of failed operations in the last hour "
            "(NMDC_CHECK_FAILED_OPERATIONS_SHARE)."
        ),
    )

    def resolved_url(self) -> str:
        """The database URL these settings lead to."""
        if self.url:
            return normalize_url(self.url)
        return resolve_urls(get_settings(), create=False).runtime

    def resolved_max_attempts(self) -> int:
        """The `max_attempts` of new jobs."""
        return self.max_attempts if self.max_attempts is not None else get_settings().max_attempts

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block succeeds, rolled back when it raises."""
        with _database(self.resolved_url()).session() as session:
            yield session
