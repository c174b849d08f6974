"""The claimable listing's plan reads the listing site's own open work, whatever else the tables hold: another
workflow's many unclaimed jobs ahead of it in `seq` order (which the planner, guessing them spread evenly, was
once tempted to walk through in `ix_jobs_unclaimed`), that workflow's claims under lapsed leases, and a long
history of finished jobs."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from nmdc_runtime.models import Workflow
from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store.jobs import claimable_page_query, list_jobs
from nmdc_runtime.store.pages import PageParams

_JOBS = sa.text(
    """
    INSERT INTO jobs (workflow_id, status, attempts, max_attempts, config, created_by)
    SELECT :workflow_id, :status, 0, 3, '{}', 'test' FROM generate_series(1, :n)
    """
)


def _plan(session, site_id: str) -> dict:
    stmt, params, _ = claimable_page_query(site_id=site_id, drain_after=3, page=PageParams(size=20))
    sql = stmt.params(**params).compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    return session.execute(sa.text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).scalar()[0]["Plan"]


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


_LAPSED = sa.text(
    """
    INSERT INTO operations (id, job_id, site_id, workflow_id, attempt, lease_expire_time, lease_seconds,
                            create_time, update_time)
    SELECT 'op-' || id, id, 'other', workflow_id, 1, now() - interval '1 hour', 60, now(), now()
    FROM jobs WHERE workflow_id = :workflow_id AND status = 'claimed'
    """
)


def test_the_first_page_reads_the_sites_own_open_work_not_what_lies_ahead_or_beside_it(session):
    accounts_store.create_site(session, site_id="lister", name="L", capabilities=["mine"])
    accounts_store.create_site(session, site_id="other", name="O", capabilities=["theirs"])
    session.add_all(
        [
            Workflow(id="busy", name="b", version="1", data_types=[], required_capabilities=["theirs"]),
            Workflow(id="own", name="o", version="1", data_types=[], required_capabilities=["mine"]),
        ]
    )
    session.flush()
    session.execute(_JOBS, {"workflow_id": "own", "status": "succeeded", "n": 20_000})
    session.execute(_JOBS, {"workflow_id": "busy", "status": "unclaimed", "n": 30_000})
    session.execute(_JOBS, {"workflow_id": "busy", "status": "claimed", "n": 3_000})
    session.execute(_LAPSED, {"workflow_id": "busy"})
    session.execute(_JOBS, {"workflow_id": "own", "status": "unclaimed", "n": 30})
    session.commit()
    session.execute(sa.text("ANALYZE jobs"))
    session.execute(sa.text("ANALYZE operations"))

    plan = _plan(session, "lister")
    scans = [node for node in _nodes(plan) if node.get("Relation Name") == "jobs"]
    read = sum(node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0) for node in scans)
    assert any(node.get("Index Name") == "ix_jobs_unclaimed_workflow" for node in scans), json.dumps(plan)
    # A page and the row that says another follows: not the 30,000 ahead, the 3,000 lapsed claims beside, nor
    # the 20,000 finished.
    assert read <= 21 + 1, json.dumps(plan)

    jobs, next_token = list_jobs(session, page=PageParams(size=20), claimable_by_site="lister", drain_after=3)
    assert len(jobs) == 20 and {job.workflow_id for job in jobs} == {"own"} and next_token
