"""Alembic environment: runs migrations on the URL the runtime resolved."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from nmdc_runtime.models import Base

config = context.config

# One lock key for the whole runtime: processes that start together (API, Dagster, tests) migrate in turn.
MIGRATION_LOCK = 0x6E6D6463


def run_migrations_online() -> None:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            connection.commit()
    engine.dispose()


run_migrations_online()
