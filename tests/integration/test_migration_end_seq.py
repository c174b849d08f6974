"""Migration 0006 on a database with history: operations that ended before it are numbered in the order they
ended, later endings follow them, and the downgrade takes it all away again."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command

from nmdc_runtime.db import drop_database, ensure_database, with_database
from nmdc_runtime.migrations import alembic_config, upgrade

ERROR = '{"code": "INTERNAL", "message": "m"}'


@pytest.fixture
def url(server_url: str) -> Iterator[str]:
    name = f"nmdc_test_mig_{os.getpid()}_{secrets.token_hex(3)}"
    ensure_database(server_url, name)
    yield with_database(server_url, name)
    drop_database(server_url, name)


def _end_seqs(engine: sa.Engine) -> dict[str, int | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT id, end_seq FROM operations")).tuples().all())


def test_history_is_numbered_in_the_order_it_ended(url: str):
    upgrade(url, "0002")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO sites (id, name) VALUES ('site-e', 'E')"))
            conn.execute(sa.text("INSERT INTO workflows (id, name, version) VALUES ('wf', 'wf', '1')"))
            # Made in the order a, b, c, open; ended in the order c, a, b.
            for op_id, minutes_ago, done in (
                ("a", 20, True),
                ("b", 10, True),
                ("c", 30, True),
                ("open", 0, False),
            ):
                conn.execute(
                    sa.text("INSERT INTO jobs (id, workflow_id, max_attempts) VALUES (:job, 'wf', 3)"),
                    {"job": "job-" + op_id},
                )
                conn.execute(
                    sa.text(
                        """
                        INSERT INTO operations (id, job_id, site_id, workflow_id, attempt, state, done, error,
                                                lease_expire_time, update_time)
                        VALUES (:id, :job, 'site-e', 'wf', 1, :state, :done, CAST(:error AS jsonb), now(),
                                now() - make_interval(mins => :ago))
                        """
                    ),
                    {
                        "id": op_id,
                        "job": "job-" + op_id,
                        "state": "failed" if done else "running",
                        "done": done,
                        "error": ERROR if done else None,
                        "ago": minutes_ago,
                    },
                )

        upgrade(url, "head")

        assert _end_seqs(engine) == {"c": 1, "a": 2, "b": 3, "open": None}
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE operations SET state = 'failed', done = true, error = CAST(:e AS jsonb) "
                    "WHERE id = 'open'"
                ),
                {"e": ERROR},
            )
        assert _end_seqs(engine)["open"] == 4

        command.downgrade(alembic_config(url), "0005")
        with engine.connect() as conn:
            columns = conn.execute(
                sa.text("SELECT column_name FROM information_schema.columns WHERE table_name = 'operations'")
            ).scalars()
            assert "end_seq" not in set(columns)
            assert conn.execute(sa.text("SELECT to_regclass('operations_end_seq')")).scalar() is None
        upgrade(url, "head")
    finally:
        engine.dispose()
