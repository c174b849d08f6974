"""The claim's, the PATCH's and the execution's statements lock their job found by its key, whatever the
planner's statistics say about the job's status: with the status in the same WHERE, a status the statistics
had not seen yet (jobs claimed since the last ANALYZE) made PostgreSQL read the job through
`ix_jobs_status_seq`, every job of that status, and the full benchmark's cycles ran at a third of their speed."""

from __future__ import annotations

import json

import sqlalchemy as sa

from nmdc_runtime.store import operations as store
from nmdc_runtime.store.operations import driver_sql

FINISHED, CLAIMED = 20_000, 2_000


def _plan(session, statement: sa.Select, params: dict) -> dict:
    explained = session.connection().exec_driver_sql(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + driver_sql(statement), params
    )
    return explained.scalar_one()[0]["Plan"]


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def test_the_job_is_locked_through_its_key_when_the_statistics_have_not_seen_its_status(clean_database):
    with clean_database.sessionmaker() as session:
        session.execute(sa.text("INSERT INTO workflows (id, name, version) VALUES ('wf', 'wf', '1')"))
        session.execute(
            sa.text(
                "INSERT INTO jobs (workflow_id, status, attempts, max_attempts) "
                "SELECT 'wf', 'succeeded', 1, 3 FROM generate_series(1, :n)"
            ),
            {"n": FINISHED + CLAIMED},
        )
        session.commit()
        session.execute(sa.text("ANALYZE jobs"))
        # Claimed after the statistics were taken: as far as the planner knows, no job is claimed.
        session.execute(
            sa.text(
                "UPDATE jobs SET status = 'claimed', updated_at = now() "
                "WHERE seq IN (SELECT seq FROM jobs ORDER BY seq LIMIT :n)"
            ),
            {"n": CLAIMED},
        )
        session.commit()
        job_id, attempts, updated_at = session.execute(
            sa.text(
                "SELECT id, attempts, updated_at FROM jobs WHERE status = 'claimed' ORDER BY seq DESC LIMIT 1"
            )
        ).one()
        seen = {"job_key": job_id, "job_seen_status": "claimed", "job_seen_attempts": attempts}

        for locked, params in (
            (store.job_locked_as_seen(), {**seen, "job_seen_updated_at": updated_at}),  # PATCH, execution
            (store._job_locked_if("status", "attempts"), seen),  # the claim
        ):
            plan = _plan(session, sa.select(locked.c.id), params)
            jobs_read = [node for node in _nodes(plan) if node.get("Relation Name") == "jobs"]

            assert [node.get("Index Name") for node in jobs_read] == ["pk_jobs"], json.dumps(plan, indent=1)
            assert plan["Actual Rows"] == 1
            # A handful of pages, not the 2,000 claimed jobs'.
            assert (
                sum(
                    node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0) for node in jobs_read
                )
                < 20
            )
        session.rollback()
