"""Data sizes built in SQL (one `INSERT ... SELECT generate_series` per step), not through the API: millions
of jobs in seconds rather than hours, so that the scenarios measure what a big history costs a request."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from nmdc_runtime.db import Database
from nmdc_runtime.store import pipeline as pipeline_store

# Finished jobs as a long-running system holds them: their operations are past retention and deleted.
_ADD_JOBS = sa.text(
    """
    INSERT INTO jobs (workflow_id, status, attempts, max_attempts, config, created_by)
    SELECT :workflow_id, :status, :attempts, 3, jsonb_build_object('bench', :workflow_id, 'n', g), 'bench'
    FROM generate_series(1, :n) AS g
    """
)


def add_jobs(database: Database, *, workflow_id: str, n: int, status: str, chunk: int = 1_000_000) -> float:
    """Insert `n` jobs of a workflow in `status` (in chunks, each a transaction); return the seconds taken."""
    started = time.monotonic()
    attempts = 0 if status == "unclaimed" else 1
    left = n
    while left > 0:
        step = min(chunk, left)
        with database.session() as session:
            session.execute(
                _ADD_JOBS, {"workflow_id": workflow_id, "status": status, "attempts": attempts, "n": step}
            )
        left -= step
    return time.monotonic() - started


def unclaimed_ids(database: Database, *, workflow_id: str, n: int) -> list[str]:
    """Insert `n` unclaimed jobs of a workflow; their ids, in creation order."""
    with database.session() as session:
        return list(
            session.scalars(
                sa.text(
                    """
                    INSERT INTO jobs (workflow_id, max_attempts, config, created_by)
                    SELECT :workflow_id, 3, jsonb_build_object('bench', :workflow_id, 'n', g), 'bench'
                    FROM generate_series(1, :n) AS g
                    RETURNING id
                    """
                ),
                {"workflow_id": workflow_id, "n": n},
            )
        )


def finish_unclaimed(database: Database, *, workflow_id: str) -> int:
    """Mark a workflow's unclaimed jobs succeeded (they join the history); how many."""
    with database.session() as session:
        return session.execute(
            sa.text(
                "UPDATE jobs SET status = 'succeeded', attempts = 1 "
                "WHERE workflow_id = :workflow_id AND status = 'unclaimed'"
            ),
            {"workflow_id": workflow_id},
        ).rowcount


def add_lapsed_claims(database: Database, *, workflow_id: str, site_id: str, n: int) -> None:
    """`n` claimed jobs of a workflow whose holder went silent: open operations whose lease lapsed a minute
    ago, attempts left (claimable again, as the claimable listing's second part finds them)."""
    lapsed = datetime.now(UTC) - timedelta(minutes=1)
    with database.session() as session:
        session.execute(
            sa.text(
                """
                WITH made AS (
                    INSERT INTO jobs (workflow_id, status, attempts, max_attempts, config, created_by)
                    SELECT :workflow_id, 'claimed', 1, 3, '{}'::jsonb, 'bench' FROM generate_series(1, :n)
                    RETURNING id
                )
                INSERT INTO operations (id, job_id, site_id, workflow_id, attempt, lease_expire_time,
                                        lease_seconds)
                SELECT 'op-' || replace(gen_random_uuid()::text, '-', ''), id, :site_id, :workflow_id, 1,
                       :lapsed, 60
                FROM made
                """
            ),
            {"workflow_id": workflow_id, "site_id": site_id, "n": n, "lapsed": lapsed},
        )


def analyze(database: Database) -> None:
    """VACUUM ANALYZE the tables the scenarios read, as autovacuum would after a bulk load."""
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("jobs", "operations", "job_inputs", "data_resources"):
            connection.execute(sa.text(f"VACUUM ANALYZE {table}"))


def count_jobs(database: Database) -> int:
    """How many jobs the table holds."""
    with database.session() as session:
        return session.scalar(sa.text("SELECT count(*) FROM jobs"))


def seq_of_nth_claimable(database: Database, *, workflow_id: str, n: int) -> int:
    """The `seq` of a workflow's n-th unclaimed job (1-based): where a page that deep starts."""
    with database.session() as session:
        return session.scalar(
            sa.text(
                "SELECT seq FROM jobs WHERE workflow_id = :workflow_id AND status = 'unclaimed' "
                "ORDER BY seq OFFSET :offset LIMIT 1"
            ),
            {"workflow_id": workflow_id, "offset": n - 1},
        )


def runtime_status_ms(database: Database) -> float:
    """How long the health figures take to read (`runtime_status`: each minute, and at each metrics scrape)."""
    started = time.perf_counter()
    with database.session() as session:
        pipeline_store.runtime_status(session, now=datetime.now(UTC))
    return (time.perf_counter() - started) * 1000


def count_by_status_ms(database: Database) -> float:
    """How long counting every job by status takes: what the health figures cost each minute before the
    tallies (migration 0009), for comparison with `runtime_status_ms`."""
    started = time.perf_counter()
    with database.session() as session:
        session.execute(sa.text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
    return (time.perf_counter() - started) * 1000
