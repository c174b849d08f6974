"""Migration 0006 on a database with history: operations that ended before it are numbered in the order they
ended, later endings follow them, and the downgrade takes it all away again."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from nmdc_runtime.migrations import alembic_config, upgrade

ERROR = '{"code": "INTERNAL", "message": "m"}'


def _end_seqs(engine: sa.Engine) -> dict[str, int | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT id, end_seq FROM operations")).tuples().all())


def test_history_is_numbered_in_the_order_it_ended(fresh_database_url: str):
    upgrade(fresh_database_url, "0002")
    engine = sa.create_engine(fresh_database_url, poolclass=sa.pool.NullPool)
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

        upgrade(fresh_database_url, "head")

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

        command.downgrade(alembic_config(fresh_database_url), "0005")
        with engine.connect() as conn:
            columns = conn.execute(
                sa.text("SELECT column_name FROM information_schema.columns WHERE table_name = 'operations'")
            ).scalars()
            assert "end_seq" not in set(columns)
            assert conn.execute(sa.text("SELECT to_regclass('operations_end_seq')")).scalar() is None
        upgrade(fresh_database_url, "head")
    finally:
        engine.dispose()
