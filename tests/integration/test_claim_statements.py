"""What a claim sends to the database: an unclaimed job is claimed in two statements without BEGIN or COMMIT,
and the second writes nothing unless the job is still as the first read it (else the general path decides)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.errors import Conflict
from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Job, Operation, Workflow
from nmdc_runtime.services import claims as claims_service
from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store import operations as operations_store
from tests.integration.builders import SERVICE_POLICY

NOW = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
POLICY = SERVICE_POLICY


@pytest.fixture
def job_id(session) -> str:
    accounts_store.create_site(session, site_id="site-e", name="E", capabilities=["gpu"])
    accounts_store.create_site(session, site_id="site-f", name="F", capabilities=["gpu"])
    session.add(Workflow(id="wf", name="w", version="1", data_types=[], required_capabilities=["gpu"]))
    session.flush()
    job = Job(workflow_id="wf", max_attempts=2)
    session.add(job)
    session.commit()
    return job.id


def _job(database, job_id: str) -> tuple[str, int]:
    with database.session() as session:
        return session.execute(sa.select(Job.status, Job.attempts).where(Job.id == job_id)).one()._tuple()


def test_an_unclaimed_job_is_claimed_in_two_statements_outside_a_transaction(clean_database, job_id):
    sent = []

    def note(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement.split()[0], conn.connection.dbapi_connection.autocommit))

    # Both pools: the one-statement paths run on the autocommit one.
    engines = (clean_database.engine, clean_database.autocommit_engine)
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", note)
    try:
        with clean_database.sessionmaker() as session:
            claim = claims_service.claim_job(session, job_id=job_id, site_id="site-e", policy=POLICY, now=NOW)
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", note)
    # Autocommit: psycopg2 sends no BEGIN, and each statement commits itself.
    assert sent == [("SELECT", True), ("WITH", True)]
    assert claim.created and claim.operation.attempt == 1 and claim.operation.site_id == "site-e"
    assert claim.operation.lease_expire_time == NOW + timedelta(seconds=60)
    assert _job(clean_database, job_id) == ("claimed", 1)
    with clean_database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Operation)) == 1
        # The connection went back to the pool as it came: the next session runs ordinary transactions.
        assert not session.connection().connection.dbapi_connection.autocommit


def test_the_write_does_nothing_when_the_job_changed_since_it_was_read(clean_database, job_id):
    with clean_database.sessionmaker() as session:
        job, _ = operations_store.job_and_claim_terms(session, job_id=job_id, site_id="site-e", drain_after=3)
        session.rollback()
        fields = operations_rules.start_operation(job, site_id="site-e", now=NOW, lease_seconds=60)
        # Another claim counted an attempt meanwhile (and was released): the job is unclaimed again, but
        # not as seen.
        session.execute(sa.update(Job).where(Job.id == job_id).values(attempts=1))
        session.commit()
        assert (
            operations_store.claim_as_seen(
                session, job=job, seen_status="unclaimed", seen_attempts=0, operation=fields
            )
            is None
        )
        session.commit()
    assert _job(clean_database, job_id) == ("unclaimed", 1)
    with clean_database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Operation)) == 0


def test_an_open_operation_stops_the_write_whole_without_a_savepoint(clean_database, job_id):
    with clean_database.session() as session:
        # Not a state the service makes (an unclaimed job has no open operation): the index is the last word.
        session.add(
            Operation(
                id=new_id("op"),
                job_id=job_id,
                site_id="site-f",
                workflow_id="wf",
                attempt=1,
                lease_expire_time=NOW,
                lease_seconds=60,
            )
        )
    with clean_database.sessionmaker() as session:
        job, _ = operations_store.job_and_claim_terms(session, job_id=job_id, site_id="site-e", drain_after=3)
        fields = operations_rules.start_operation(job, site_id="site-e", now=NOW, lease_seconds=60)
        assert (
            operations_store.claim_as_seen(
                session, job=job, seen_status="unclaimed", seen_attempts=0, operation=fields
            )
            is None
        )
        session.commit()
    # The job's update stood or fell with the insert.
    assert _job(clean_database, job_id) == ("unclaimed", 0)


def test_a_job_that_changed_between_the_statements_takes_the_general_path(
    clean_database, job_id, monkeypatch
):
    seen = operations_store.job_and_claim_terms

    def read_then_another_site_claims(session, **kwargs):
        view = seen(session, **kwargs)
        if kwargs["site_id"] == "site-e":
            with clean_database.sessionmaker() as other:
                claims_service.claim_job(other, job_id=job_id, site_id="site-f", policy=POLICY, now=NOW)
        return view

    monkeypatch.setattr(operations_store, "job_and_claim_terms", read_then_another_site_claims)
    with clean_database.sessionmaker() as session, pytest.raises(Conflict, match="another site"):
        claims_service.claim_job(session, job_id=job_id, site_id="site-e", policy=POLICY, now=NOW)
    assert _job(clean_database, job_id) == (JobStatus.CLAIMED.value, 1)
