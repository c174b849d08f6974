"""Dagster's PostgreSQL event log with a small connection pool (`dagster.yaml`, `event_log_storage`).

dagster-postgres opens a new connection for each call of its event log outside the webserver: a new server
process each time. The sensors report each execution and each ended operation as an asset event, two calls
each, so a busy hour forks thousands of backends (bench/README.md, "The bounds": about 7 ms of CPU each, up
to half a core while sites run their cycles). The daemon, which stores those events, is one long-lived
process; its event log keeps a few connections instead, as the webserver's does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

if TYPE_CHECKING:
    from dagster._serdes import ConfigurableClassData

POOL_SIZE = 2
"""Connections kept open: the daemon stores events from a few sensor threads at a time."""
MAX_OVERFLOW = 4
POOL_RECYCLE_SECONDS = 3600


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    """`PostgresEventLogStorage` whose engine keeps `POOL_SIZE` connections (in autocommit, as Dagster's own)."""

    def __init__(
        self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None
    ):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        unpooled = self._engine
        self._engine = create_pg_engine(
            self.postgres_url,
            token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_recycle=POOL_RECYCLE_SECONDS,
            # A connection the server closed (a restart) is found before use, not by a failed event write.
            pool_pre_ping=True,
        )
        unpooled.dispose()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresEventLogStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
