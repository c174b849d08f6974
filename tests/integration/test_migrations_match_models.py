"""The migrated database has the tables, columns and indexes `nmdc_runtime/models.py` declares, and no other."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from nmdc_runtime.models import Base


def test_the_migrations_make_the_schema_the_models_declare(database):
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
