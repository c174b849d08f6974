"""The claim's, the PATCH's and the execution's statements lock their job found by its key, and the claimable
listing fetches the jobs of lapsed leases by theirs, whatever the planner's statistics say about the status:
with the status in the same scan, a status the statistics had not seen yet (jobs claimed since the last
ANALYZE) made PostgreSQL read the jobs through `ix_jobs_status_seq`, every job of that status, and the full
benchmark's cycles ran at a third of their speed."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store.jobs import claimable_page_query
from nmdc_runtime.store.operations import driver_sql
from nmdc_runtime.store.pages import PageParams

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


def _jobs_read(plan: dict) -> list[dict]:
    return [node for node in _nodes(plan) if node.get("Relation Name") == "jobs"]


@pytest.fixture
def claimed_unseen(clean_database):
    """Jobs analyzed while none was claimed, then 2,000 claimed by site-e (one lease lapsed): a session."""
    with clean_database.sessionmaker() as session:
        session.execute(sa.text("INSERT INTO sites (id, name) VALUES ('site-e', 'E')"))
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
        session.execute(
            sa.text(
                "INSERT INTO operations (id, job_id, site_id, workflow_id, attempt, lease_expire_time, "
                "lease_seconds) SELECT 'op-' || id, id, 'site-e', 'wf', 1, "
                "CASE WHEN seq = 1 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END, 60 "
                "FROM jobs WHERE status = 'claimed'"
            )
        )
        session.commit()
        yield session
        session.rollback()


def test_the_job_is_locked_through_its_key_when_the_statistics_have_not_seen_its_status(claimed_unseen):
    session = claimed_unseen
    job_id, attempts, updated_at = session.execute(
        sa.text(
            "SELECT id, attempts, updated_at FROM jobs WHERE status = 'claimed' ORDER BY seq DESC LIMIT 1"
        )
    ).one()
    seen = {"job_key": job_id, "job_seen_status": "claimed", "job_seen_attempts": attempts}

    for locked, params in (
        (
            operations_store.job_locked_as_seen(),
            {**seen, "job_seen_updated_at": updated_at},
        ),  # PATCH, execution
        (operations_store._job_locked_if("status", "attempts"), seen),  # the claim
    ):
        plan = _plan(session, sa.select(locked.c.id), params)
        jobs_read = _jobs_read(plan)

        assert [node.get("Index Name") for node in jobs_read] == ["pk_jobs"], json.dumps(plan, indent=1)
        assert plan["Actual Rows"] == 1
        # A handful of pages, not the 2,000 claimed jobs'.
        assert (
            sum(node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0) for node in jobs_read)
            < 20
        )


def test_the_listing_fetches_the_lapsed_leases_jobs_by_their_keys(claimed_unseen):
    session = claimed_unseen
    stmt, params, _ = claimable_page_query(site_id="site-e", drain_after=3, page=PageParams(size=10))
    sql = stmt.params(**params).compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    plan = session.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}")).scalar_one()[0]["Plan"]

    # The one lapsed lease's job is listed, read by its key; the other claimed jobs are never walked.
    assert plan["Actual Rows"] == 1
    indexes = {node["Index Name"] for node in _nodes(plan) if "Index Name" in node}
    assert "pk_jobs" in indexes and "ix_jobs_status_seq" not in indexes, json.dumps(plan)
