"""Migration 0007 on a database with data: existing data resources stay open (`requires_grant` false), new
ones may require a grant, and the downgrade takes the column away again."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from nmdc_runtime.migrations import alembic_config, upgrade

INSERT = """
    INSERT INTO data_resources (id, site_id, name, url, data_type, size)
    VALUES (:id, 'site-d', :id, 'https://data.example.org/' || :id, 'table', 1)
"""


def test_existing_data_stays_open_and_the_downgrade_removes_the_column(fresh_database_url: str):
    upgrade(fresh_database_url, "0006")
    engine = sa.create_engine(fresh_database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO sites (id, name) VALUES ('site-d', 'D')"))
            conn.execute(sa.text(INSERT), {"id": "dr-old"})
        upgrade(fresh_database_url, "0007")
        with engine.begin() as conn:
            conn.execute(sa.text(INSERT), {"id": "dr-new"})
            conn.execute(sa.text("UPDATE data_resources SET requires_grant = true WHERE id = 'dr-new'"))
            rows = dict(conn.execute(sa.text("SELECT id, requires_grant FROM data_resources")).tuples().all())
            assert rows == {"dr-old": False, "dr-new": True}
            with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
                conn.execute(sa.text("UPDATE data_resources SET requires_grant = NULL"))
        command.downgrade(alembic_config(fresh_database_url), "0006")
        columns = {column["name"] for column in sa.inspect(engine).get_columns("data_resources")}
        assert "requires_grant" not in columns and "url" in columns
    finally:
        engine.dispose()
