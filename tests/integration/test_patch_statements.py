"""What the holding site's PATCH sends to the database: a heartbeat or a finish of its open operation is one
read and one conditional write without BEGIN or COMMIT, and the write changes nothing unless the operation and
its job are still as read (else the general path decides, on the locked rows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nmdc_runtime.domain import operations as rules
from nmdc_runtime.domain.errors import Forbidden, InvalidInput, LeaseLost
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.domain.states import OperationState
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Execution, Job, Operation, Workflow
from nmdc_runtime.services import claims, operations
from nmdc_runtime.store import accounts
from nmdc_runtime.store import operations as store

NOW = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
POLICY = Policy(
    claim_lease_seconds=60,
    max_lease_seconds=86400,
    operation_retention_seconds=3600,
    idempotency_retention_seconds=3600,
    max_attempts=2,
)
SITE_E = Principal(kind="site_client", name="client-e", site_id="site-e")
SITE_F = Principal(kind="site_client", name="client-f", site_id="site-f")
ADMIN = Principal(kind="user", name="root", admin=True)


class Claimed:
    def __init__(self, job_id: str, op_id: str, execution_id: str) -> None:
        self.job_id, self.op_id, self.execution_id = job_id, op_id, execution_id


@pytest.fixture
def claimed(clean_database) -> Claimed:
    """A job claimed by site-e at NOW, with a succeeded execution recorded under the claim."""
    with clean_database.sessionmaker() as session:
        accounts.create_site(session, site_id="site-e", name="E", capabilities=[])
        accounts.create_site(session, site_id="site-f", name="F", capabilities=[])
        session.add(Workflow(id="wf", name="w", version="1", data_types=[], required_capabilities=[]))
        session.flush()
        job = Job(workflow_id="wf", max_attempts=2)
        session.add(job)
        session.commit()
        op = claims.claim_job(session, job_id=job.id, site_id="site-e", policy=POLICY, now=NOW).operation
        execution = Execution(
            id=new_id("exec"),
            job_id=job.id,
            site_id="site-e",
            operation_id=op.id,
            workflow_id="wf",
            status="succeeded",
            started_at=NOW,
            ended_at=NOW,
        )
        session.add(execution)
        session.commit()
        return Claimed(job.id, op.id, execution.id)


def _sent(database):
    """Record (first word, autocommit) of each statement sent while the block runs."""
    sent = []

    def note(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement.split()[0], conn.connection.dbapi_connection.autocommit))

    sa.event.listen(database.engine, "before_cursor_execute", note)
    return sent, lambda: sa.event.remove(database.engine, "before_cursor_execute", note)


def _rows(database, claimed: Claimed) -> tuple[Operation, Job]:
    with database.session() as session:
        return (
            session.get(Operation, claimed.op_id),
            session.get(Job, claimed.job_id),
        )


def _patch(database, claimed: Claimed, principal=SITE_E, now=LATER, **body) -> operations.Patched:
    with database.sessionmaker() as session:
        return operations.patch_operation(
            session, op_id=claimed.op_id, principal=principal, policy=POLICY, now=now, **body
        )


def test_a_heartbeat_is_one_read_and_one_write_outside_a_transaction(clean_database, claimed):
    _, job_before = _rows(clean_database, claimed)
    sent, stop = _sent(clean_database)
    try:
        patched = _patch(clean_database, claimed, metadata={"progress": 40, "message": "aligning"})
    finally:
        stop()
    assert sent == [("SELECT", True), ("WITH", True)]
    assert patched.result is None
    op, job = _rows(clean_database, claimed)
    assert op.extra_metadata == {"progress": 40, "message": "aligning"}
    assert op.lease_expire_time == LATER + timedelta(seconds=60) and op.update_time == LATER
    assert patched.operation.lease_expire_time == op.lease_expire_time
    # A heartbeat does not write the job.
    assert (job.status, job.attempts, job.updated_at) == (job_before.status, 1, job_before.updated_at)


def test_a_finish_with_a_result_moves_the_job_in_the_same_statement(clean_database, claimed):
    sent, stop = _sent(clean_database)
    try:
        patched = _patch(clean_database, claimed, done=True, execution_id=claimed.execution_id)
    finally:
        stop()
    assert sent == [("SELECT", True), ("WITH", True)]
    assert patched.result is not None and patched.result.id == claimed.execution_id
    op, job = _rows(clean_database, claimed)
    assert (op.state, op.done, op.result_execution_id) == ("succeeded", True, claimed.execution_id)
    assert op.expire_time == LATER + timedelta(seconds=3600)
    # The database numbers endings (a trigger): the write goes through it like any other.
    assert op.end_seq is not None
    assert (job.status, job.attempts, job.updated_at) == ("succeeded", 1, LATER)


def test_a_finish_with_an_error_counts_the_attempt(clean_database, claimed):
    _patch(
        clean_database, claimed, done=True, error={"code": "INTERNAL", "message": "no space", "details": {}}
    )
    op, job = _rows(clean_database, claimed)
    assert (op.state, op.error["message"], op.result_execution_id) == ("failed", "no space", None)
    assert (job.status, job.attempts) == ("unclaimed", 1)


def test_the_write_changes_nothing_when_the_operation_changed_since_it_was_read(clean_database, claimed):
    with clean_database.sessionmaker() as session:
        seen = store.operation_job_and_execution(session, op_id=claimed.op_id, execution_id=None)
        session.rollback()
        seen_versions = store.versions(seen.operation, seen.job)
        # An admin asks for cancellation meanwhile.
        operations.cancel_operation(session, op_id=claimed.op_id, principal=ADMIN, policy=POLICY, now=NOW)
        seen.operation.update_time = LATER
        assert (
            store.patch_as_seen(session, operation=seen.operation, job=seen.job, seen=seen_versions) is None
        )
        session.commit()
    op, _ = _rows(clean_database, claimed)
    assert op.cancel_requested and op.update_time == NOW


def test_the_write_changes_nothing_when_the_job_changed_since_it_was_read(clean_database, claimed):
    with clean_database.sessionmaker() as session:
        seen = store.operation_job_and_execution(
            session, op_id=claimed.op_id, execution_id=claimed.execution_id
        )
        session.rollback()
        seen_versions = store.versions(seen.operation, seen.job)
        session.execute(sa.update(Job).where(Job.id == claimed.job_id).values(updated_at=LATER))
        session.commit()
        rules.finish_operation(
            seen.operation,
            seen.job,
            state=OperationState.SUCCEEDED,
            now=LATER,
            retention_seconds=3600,
            execution_id=claimed.execution_id,
        )
        assert (
            store.patch_as_seen(session, operation=seen.operation, job=seen.job, seen=seen_versions) is None
        )
        session.commit()
    op, job = _rows(clean_database, claimed)
    assert (op.done, job.status) == (False, "claimed")


def test_a_change_between_the_statements_sends_the_patch_down_the_general_path(
    clean_database, claimed, monkeypatch
):
    read = store.operation_job_and_execution

    def read_then_an_admin_cancels_the_job(session, **kwargs):
        seen = read(session, **kwargs)
        with clean_database.sessionmaker() as other:
            claims.cancel_job(other, job_id=claimed.job_id, policy=POLICY, now=NOW)
        return seen

    monkeypatch.setattr(store, "operation_job_and_execution", read_then_an_admin_cancels_the_job)
    patched = _patch(clean_database, claimed, done=True, execution_id=claimed.execution_id)
    op, job = _rows(clean_database, claimed)
    # Decided on the locked rows: the operation succeeds, and the admin's cancel of the job stands.
    assert patched.operation.state == op.state == "succeeded"
    assert patched.operation.cancel_requested and job.status == "canceled"


@pytest.mark.parametrize(
    ("principal", "now", "body", "error"),
    [
        (SITE_F, LATER, {}, Forbidden),
        (SITE_E, NOW + timedelta(seconds=61), {}, LeaseLost),
        (SITE_E, LATER, {"metadata": {"attempt": 7}}, InvalidInput),
        (SITE_E, LATER, {"done": True, "execution_id": "exec-unknown"}, InvalidInput),
    ],
    ids=["another-site", "lapsed", "read-only-metadata", "unknown-result"],
)
def test_a_refusal_is_decided_on_the_locked_rows(clean_database, claimed, principal, now, body, error):
    sent, stop = _sent(clean_database)
    try:
        with pytest.raises(error):
            _patch(clean_database, claimed, principal=principal, now=now, **body)
    finally:
        stop()
    # The general path ran: statements inside a transaction.
    assert any(not autocommit for _, autocommit in sent)
    op, job = _rows(clean_database, claimed)
    if error is LeaseLost:
        # The general path ends the lapsed operation, and the ending outlives the refusal.
        assert (op.state, job.status) == ("expired", "unclaimed")
    else:
        assert (op.state, op.update_time, op.extra_metadata) == ("running", NOW, {})
