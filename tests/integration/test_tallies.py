"""The tallies of jobs by status and of executions (migration 0009): every way a row is written changes them,
a fold keeps their sum, the health figures read them instead of counting history, and the migration starts
them from the rows already there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nmdc_runtime.ids import new_id
from nmdc_runtime.migrations import upgrade
from nmdc_runtime.models import Execution, Job, Workflow, tally_changes
from nmdc_runtime.services import claims as claims_service
from nmdc_runtime.services import maintenance as maintenance_service
from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store import pipeline as pipeline_store
from tests.integration.builders import SERVICE_POLICY

NOW = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
POLICY = SERVICE_POLICY


def _counted(session) -> dict[str, int]:
    """What the tallies should say, counted the slow way."""
    rows = session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)).all()
    counts = {f"jobs.{status}": n for status, n in rows}
    executions = session.scalar(sa.select(sa.func.count()).select_from(Execution))
    if executions:
        counts["executions"] = executions
    session.rollback()  # the services below start from no transaction, as in a request
    return counts


def _tallied(session) -> dict[str, int]:
    tallied = {counted: n for counted, n in pipeline_store.tallies(session).items() if n}
    session.rollback()
    return tallied


def _pending(session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(tally_changes))


@pytest.fixture
def workflow(clean_database) -> str:
    with clean_database.sessionmaker() as session:
        accounts_store.create_site(session, site_id="site-e", name="E", capabilities=[])
        session.add(Workflow(id="wf", name="w", version="1", data_types=[], required_capabilities=[]))
        session.commit()
    return "wf"


def test_every_write_of_jobs_and_executions_moves_the_tallies_and_a_fold_keeps_their_sum(
    clean_database, workflow
):
    with clean_database.sessionmaker() as session:
        # A batch, as the sensor inserts them: one statement.
        session.execute(sa.insert(Job), [{"workflow_id": workflow, "max_attempts": 1} for _ in range(5)])
        session.commit()
        assert _tallied(session) == _counted(session) == {"jobs.unclaimed": 5}
        first, second, third, doomed, _ = session.scalars(sa.select(Job.id).order_by(Job.seq)).all()
        session.rollback()

        # A claim through the service, then a lapse that sends its job back (the reaper's rule).
        claims_service.claim_job(session, job_id=first, site_id="site-e", policy=POLICY, now=NOW)
        claimed = claims_service.claim_job(
            session, job_id=second, site_id="site-e", policy=POLICY, now=NOW
        ).operation
        assert _tallied(session) == {"jobs.unclaimed": 3, "jobs.claimed": 2}
        maintenance_service.reap_lapsed_leases(session, now=NOW + timedelta(minutes=5), policy=POLICY)
        assert _tallied(session) == _counted(session)

        # An execution, a job finished and one canceled in one statement, one deleted, one updated in place.
        session.add(
            Execution(
                id=new_id("exec"),
                job_id=second,
                site_id="site-e",
                operation_id=claimed.id,
                workflow_id=workflow,
                status="succeeded",
                started_at=NOW,
                ended_at=NOW,
            )
        )
        finished = sa.case((Job.id == second, "succeeded"), else_="canceled")
        session.execute(sa.update(Job).where(Job.id.in_([second, third])).values(status=finished))
        session.execute(sa.delete(Job).where(Job.id == doomed))
        session.execute(sa.update(Job).where(Job.id == first).values(max_attempts=3))
        session.commit()
        counted = _counted(session)
        assert counted["executions"] == 1 and counted["jobs.canceled"] == 1
        assert _tallied(session) == counted
        assert _pending(session) > 0

        folded = maintenance_service.fold_tally_changes(session)

        assert folded > 0 and _pending(session) == 0
        assert _tallied(session) == counted
        # Folding nothing changes nothing.
        assert maintenance_service.fold_tally_changes(session) == 0
        assert _tallied(session) == counted


def test_a_change_not_yet_committed_waits_for_the_next_fold(clean_database, workflow):
    with clean_database.engine.connect() as writer, clean_database.sessionmaker() as session:
        writer.execute(sa.insert(Job).values(workflow_id=workflow, max_attempts=1))
        # The writer's transaction is still open: its change is invisible to the fold and must not be lost.
        assert maintenance_service.fold_tally_changes(session) == 0
        writer.commit()
        assert _tallied(session) == {"jobs.unclaimed": 1}
        assert maintenance_service.fold_tally_changes(session) == 1
        assert _tallied(session) == {"jobs.unclaimed": 1}


def test_truncating_a_table_empties_its_tallies(clean_database, workflow):
    with clean_database.sessionmaker() as session:
        session.execute(sa.insert(Job), [{"workflow_id": workflow, "max_attempts": 1} for _ in range(3)])
        session.commit()
        maintenance_service.fold_tally_changes(session)
        session.execute(sa.insert(Job).values(workflow_id=workflow, max_attempts=1))
        session.commit()
        session.execute(sa.text("TRUNCATE jobs CASCADE"))
        session.commit()
        assert _tallied(session) == {}


def test_the_health_figures_are_read_from_the_tallies(clean_database, workflow):
    with clean_database.sessionmaker() as session:
        session.execute(sa.insert(Job), [{"workflow_id": workflow, "max_attempts": 1} for _ in range(2)])
        session.commit()
        maintenance_service.fold_tally_changes(session)
        # Had the figures counted the rows, this would not show.
        session.execute(sa.text("UPDATE tallies SET n = n + 1000000 WHERE counted = 'jobs.unclaimed'"))
        session.execute(
            sa.text("INSERT INTO tallies (counted, n) VALUES ('jobs.succeeded', 7), ('executions', 9)")
        )
        session.commit()

        status = pipeline_store.runtime_status(session, now=datetime.now(UTC))

    assert status["jobs_by_status"] == {"unclaimed": 1000002, "succeeded": 7}
    assert status["executions"] == 9


def test_the_migration_starts_the_tallies_from_the_rows_already_there(fresh_database_url: str):
    upgrade(fresh_database_url, "0008")
    engine = sa.create_engine(fresh_database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO sites (id, name) VALUES ('site-e', 'E')"))
            conn.execute(sa.text("INSERT INTO workflows (id, name, version) VALUES ('wf', 'wf', '1')"))
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (id, workflow_id, max_attempts, status) "
                    "SELECT 'job-' || i, 'wf', 1, CASE WHEN i <= 3 THEN 'succeeded' ELSE 'unclaimed' END "
                    "FROM generate_series(1, 5) i"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO executions (id, job_id, site_id, operation_id, workflow_id, status, started_at, "
                    "ended_at) VALUES ('exec-1', 'job-1', 'site-e', 'op-1', 'wf', 'succeeded', now(), now())"
                )
            )

        upgrade(fresh_database_url, "head")

        with engine.connect() as conn:
            tallies = dict(conn.execute(sa.text("SELECT counted, n FROM tallies")).tuples().all())
            pending = conn.execute(sa.text("SELECT count(*) FROM tally_changes")).scalar()
        assert tallies == {"jobs.succeeded": 3, "jobs.unclaimed": 2, "executions": 1}
        assert pending == 0
    finally:
        engine.dispose()
