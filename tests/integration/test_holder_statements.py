"""What the holding site's PATCH and execution send to the database: a heartbeat or a finish of its open
operation, and an execution recorded under it, are one read and one conditional write without BEGIN or COMMIT,
and the write changes nothing unless the operation and its job are still as read (else the general path
decides, on the locked rows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.errors import Forbidden, InvalidInput, LeaseLost
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.domain.states import OperationState
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Execution, IdempotencyKey, Job, Operation, Workflow
from nmdc_runtime.services import claims as claims_service
from nmdc_runtime.services import executions as executions_service
from nmdc_runtime.services import operations as operations_service
from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store import executions as executions_store
from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store.idempotency import IdempotentRequest
from tests.integration.builders import SERVICE_POLICY

NOW = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
POLICY = SERVICE_POLICY
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
        accounts_store.create_site(session, site_id="site-e", name="E", capabilities=[])
        accounts_store.create_site(session, site_id="site-f", name="F", capabilities=[])
        session.add(Workflow(id="wf", name="w", version="1", data_types=[], required_capabilities=[]))
        session.flush()
        job = Job(workflow_id="wf", max_attempts=2)
        session.add(job)
        session.commit()
        op = claims_service.claim_job(
            session, job_id=job.id, site_id="site-e", policy=POLICY, now=NOW
        ).operation
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

    # Both pools: the one-statement paths run on the autocommit one.
    engines = (database.engine, database.autocommit_engine)
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", note)

    def stop() -> None:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", note)

    return sent, stop


def _rows(database, claimed: Claimed) -> tuple[Operation, Job]:
    with database.session() as session:
        return (
            session.get(Operation, claimed.op_id),
            session.get(Job, claimed.job_id),
        )


def _patch(database, claimed: Claimed, principal=SITE_E, now=LATER, **body) -> operations_service.Patched:
    with database.sessionmaker() as session:
        return operations_service.patch_operation(
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
        seen = operations_store.operation_job_and_execution(session, op_id=claimed.op_id, execution_id=None)
        session.rollback()
        seen_versions = operations_store.versions(seen.operation, seen.job)
        # An admin asks for cancellation meanwhile.
        operations_service.cancel_operation(
            session, op_id=claimed.op_id, principal=ADMIN, policy=POLICY, now=NOW
        )
        seen.operation.update_time = LATER
        assert (
            operations_store.patch_as_seen(
                session, operation=seen.operation, job=seen.job, seen=seen_versions
            )
            is None
        )
        session.commit()
    op, _ = _rows(clean_database, claimed)
    assert op.cancel_requested and op.update_time == NOW


def test_the_write_changes_nothing_when_the_job_changed_since_it_was_read(clean_database, claimed):
    with clean_database.sessionmaker() as session:
        seen = operations_store.operation_job_and_execution(
            session, op_id=claimed.op_id, execution_id=claimed.execution_id
        )
        session.rollback()
        seen_versions = operations_store.versions(seen.operation, seen.job)
        session.execute(sa.update(Job).where(Job.id == claimed.job_id).values(updated_at=LATER))
        session.commit()
        operations_rules.finish_operation(
            seen.operation,
            seen.job,
            state=OperationState.SUCCEEDED,
            now=LATER,
            retention_seconds=3600,
            execution_id=claimed.execution_id,
        )
        assert (
            operations_store.patch_as_seen(
                session, operation=seen.operation, job=seen.job, seen=seen_versions
            )
            is None
        )
        session.commit()
    op, job = _rows(clean_database, claimed)
    assert (op.done, job.status) == (False, "claimed")


def test_a_change_between_the_statements_sends_the_patch_down_the_general_path(
    clean_database, claimed, monkeypatch
):
    read = operations_store.operation_job_and_execution

    def read_then_an_admin_cancels_the_job(session, **kwargs):
        seen = read(session, **kwargs)
        with clean_database.sessionmaker() as other:
            claims_service.cancel_job(other, job_id=claimed.job_id, policy=POLICY, now=NOW)
        return seen

    monkeypatch.setattr(operations_store, "operation_job_and_execution", read_then_an_admin_cancels_the_job)
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


OUTPUT = {
    "name": "contigs.fna",
    "url": "https://data.example.org/contigs.fna",
    "data_type": "contigs",
    "size": 12,
    "checksums": [{"type": "md5", "value": "0" * 32}],
}


def _record(database, claimed: Claimed, principal=SITE_E, key: str | None = "k-1", now=LATER, **changes):
    body = {
        "operation_id": claimed.op_id,
        "status": "failed",
        "started_at": NOW,
        "ended_at": LATER,
        "outputs": [OUTPUT, {**OUTPUT, "name": "genes.faa"}],
        "details": {"exit_code": 1},
        **changes,
    }
    request = IdempotentRequest(
        principal=principal.key,
        key=key,
        endpoint=f"POST /jobs/{claimed.job_id}/executions",
        payload={**body, "started_at": str(body["started_at"]), "ended_at": str(body["ended_at"])},
    )
    with database.sessionmaker() as session:
        return executions_service.record_execution(
            session,
            job_id=claimed.job_id,
            site_id=principal.site_id,
            policy=POLICY,
            request=request,
            now=now,
            **body,
        )


def test_an_execution_with_outputs_and_a_key_is_one_read_and_one_write(clean_database, claimed):
    sent, stop = _sent(clean_database)
    try:
        outcome = _record(clean_database, claimed)
    finally:
        stop()
    assert sent == [("SELECT", True), ("WITH", True)]
    execution_id = outcome.value.execution.id
    with clean_database.session() as session:
        row = session.get(Execution, execution_id)
        resources = session.scalars(
            sa.select(DataResource)
            .where(DataResource.execution_id == execution_id)
            .order_by(DataResource.seq)
        ).all()
        stored = session.scalars(sa.select(IdempotencyKey).where(IdempotencyKey.key == "k-1")).one()
    assert (row.status, row.details, row.created_at) == ("failed", {"exit_code": 1}, LATER)
    assert [dr.id for dr in resources] == row.output_ids == outcome.value.execution.output_ids
    assert [(dr.name, dr.site_id, dr.created_at) for dr in resources] == [
        ("contigs.fna", "site-e", LATER),
        ("genes.faa", "site-e", LATER),
    ]
    assert resources[0].checksums == OUTPUT["checksums"]
    # The key remembers the execution and its outputs as written, in the same statement.
    assert stored.created["execution"]["id"] == execution_id
    assert [output["id"] for output in stored.created["outputs"]] == row.output_ids


def test_a_repeated_key_gets_the_first_execution_and_writes_nothing(clean_database, claimed):
    first = _record(clean_database, claimed)
    again = _record(clean_database, claimed)
    assert again.replayed and again.value.execution.id == first.value.execution.id
    with clean_database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 2  # the fixture's and one
        assert session.scalar(sa.select(sa.func.count()).select_from(DataResource)) == 2


def test_the_execution_is_not_written_when_the_operation_changed_since_it_was_read(clean_database, claimed):
    with clean_database.sessionmaker() as session:
        seen = operations_store.job_and_operations(session, job_id=claimed.job_id, op_id=claimed.op_id)
        session.rollback()
        seen_versions = operations_store.versions(seen.open, seen.job)
        # A heartbeat meanwhile: the operation is still open, but not as read.
        operations_service.patch_operation(
            session, op_id=claimed.op_id, principal=SITE_E, policy=POLICY, now=LATER, metadata={}
        )
        execution, resources = executions_store.new_execution(
            job_id=claimed.job_id,
            site_id="site-e",
            operation_id=claimed.op_id,
            workflow_id="wf",
            status="succeeded",
            started_at=NOW,
            ended_at=LATER,
            outputs=[OUTPUT],
            details={},
            now=LATER,
        )
        request = IdempotentRequest(principal=SITE_E.key, key="k-2", endpoint="e", payload={})
        assert not executions_store.record_as_seen(
            session,
            execution=execution,
            outputs=resources,
            operation=seen.open,
            job=seen.job,
            seen=seen_versions,
            request=request,
            created={},
            max_executions=10,
        )
        session.commit()
    with clean_database.session() as session:
        for table in (Execution, DataResource, IdempotencyKey):
            # Nothing of the three: not the key, not the execution, not its output.
            assert session.scalar(sa.select(sa.func.count()).select_from(table)) == (table is Execution)


@pytest.mark.parametrize(
    ("principal", "now", "changes", "error"),
    [
        (SITE_F, LATER, {}, Forbidden),
        (SITE_E, NOW + timedelta(seconds=61), {}, LeaseLost),
        (SITE_E, LATER, {"operation_id": "op-unknown"}, InvalidInput),
    ],
    ids=["another-site", "lapsed", "unknown-operation"],
)
def test_a_refused_execution_is_decided_on_the_locked_rows(
    clean_database, claimed, principal, now, changes, error
):
    sent, stop = _sent(clean_database)
    try:
        with pytest.raises(error):
            _record(clean_database, claimed, principal=principal, now=now, **changes)
    finally:
        stop()
    assert any(not autocommit for _, autocommit in sent)
    with clean_database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DataResource)) == 0
