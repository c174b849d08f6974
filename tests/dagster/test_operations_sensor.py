"""The operations sensor: every operation that ends is one event, in the order operations ended: an observation
when it went well, a failing check that names it when it did not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetObservation,
    SensorResult,
    SkipReason,
    TextMetadataValue,
)

from nmdc_runtime.dagster.assets import OPERATIONS
from nmdc_runtime.dagster.outcomes import ERROR_TEXT_CHARS
from nmdc_runtime.dagster.sensors.operations import operations_sensor
from nmdc_runtime.domain.operations import finish_operation
from nmdc_runtime.domain.states import OperationState
from nmdc_runtime.models import Job, Operation
from nmdc_runtime.services.maintenance import reap_lapsed_leases
from tests.dagster.conftest import claimed_job, recorded_execution, tick, unreachable

RETENTION = 3600


def _end(session, op_id: str, state: OperationState, **outcome) -> None:
    """End the operation the way the API does (the domain rule), in the caller's transaction."""
    op = session.get(Operation, op_id)
    job = session.get(Job, op.job_id)
    finish_operation(op, job, state=state, now=datetime.now(UTC), retention_seconds=RETENTION, **outcome)
    session.flush()


def _error(code: str, message: str) -> dict:
    return {"code": code, "message": message, "details": {}}


@pytest.fixture
def world(clean_database, make_workflow, site):
    make_workflow("wf-1", ["metagenome"])


def _metadata(event) -> dict:
    return {name: value.value for name, value in event.metadata.items()}


def test_each_ended_operation_is_one_event_in_the_order_they_ended(runtime, clean_database, world):
    lease = datetime.now(UTC) + timedelta(minutes=5)
    with clean_database.session() as session:
        ops = {
            name: claimed_job(session, lease_expire_time=lease, max_attempts=1 if name == "last" else 3)
            for name in ("retried", "last", "lapsed", "released")
        }
        ops["lapsed"].lease_expire_time = datetime.now(UTC) - timedelta(minutes=1)
    # Ended in another order than they were made: the feed follows the endings.
    with clean_database.session() as session:
        _end(session, ops["last"].id, OperationState.FAILED, error=_error("INTERNAL", "oom"))
    with clean_database.session() as session:
        _end(session, ops["retried"].id, OperationState.FAILED, error=_error("UNKNOWN", "x"))
    with clean_database.sessionmaker() as session:
        reap_lapsed_leases(session, now=datetime.now(UTC), policy=runtime.policy())
    with clean_database.session() as session:
        _end(
            session,
            ops["released"].id,
            OperationState.CANCELED,
            error=_error("CANCELLED", "released by the holding site"),
        )

    result = tick(operations_sensor, runtime)

    assert isinstance(result, SensorResult)
    order = [event.metadata["operation_id"].value for event in result.asset_events]
    assert order == [ops[name].id for name in ("last", "retried", "lapsed", "released")]
    assert {event.asset_key for event in result.asset_events} == {OPERATIONS}
    events = {
        name: result.asset_events[i] for i, name in enumerate(("last", "retried", "lapsed", "released"))
    }
    assert isinstance(events["last"].metadata["operation_id"], TextMetadataValue)
    # Failures and expiries are red (a failing check that names them), never an event that shows green.
    for name in ("last", "retried", "lapsed"):
        check = events[name]
        assert isinstance(check, AssetCheckEvaluation) and check.check_name == "operation_succeeded"
        assert check.passed is False and check.severity == AssetCheckSeverity.ERROR
    assert isinstance(events["released"], AssetObservation)

    last = _metadata(events["last"])
    assert last["state"] == "failed" and last["job_status"] == "failed"
    assert (last["attempt"], last["max_attempts"]) == (1, 1)
    assert (last["error_code"], last["error_message"]) == ("INTERNAL", "oom")
    assert last["site_id"] == "site-d" and last["job_id"] == ops["last"].job_id
    assert last["job_failed_for_good"] is True
    assert last["api_path"] == f"/operations/{ops['last'].id}"
    # The job that failed for good stands out; one with attempts left does not.
    assert events["last"].description.startswith(f"JOB FAILED: job {ops['last'].job_id} has no attempt left")
    retried = _metadata(events["retried"])
    assert retried["job_failed_for_good"] is False and retried["job_status"] == "unclaimed"
    assert events["retried"].description.startswith(f"FAILED: operation {ops['retried'].id}")
    assert _metadata(events["lapsed"])["state"] == "expired"
    assert _metadata(events["lapsed"])["error_code"] == "DEADLINE_EXCEEDED"
    assert _metadata(events["released"])["state"] == "canceled"

    assert result.skip_reason.skip_message == (
        "recorded 4 ended operations (1 canceled, 1 expired, 2 failed); "
        f"JOB FAILED, no attempt left: {ops['last'].job_id}"
    )
    assert not result.dynamic_partitions_requests

    again = tick(operations_sensor, runtime, result.cursor)
    assert isinstance(again, SkipReason) and again.skip_message.startswith("idle: no operation ended")


def test_a_success_names_its_execution_and_the_check_passes_again(runtime, clean_database, world):
    with clean_database.session() as session:
        op = claimed_job(session, lease_expire_time=datetime.now(UTC) - timedelta(hours=1), done=True)
    # The cursor does not know whether the check passes yet: the success says it does.
    event, check = tick(operations_sensor, runtime).asset_events
    metadata = _metadata(event)
    assert isinstance(event, AssetObservation)
    assert metadata["state"] == "succeeded" and metadata["execution_id"] == op.result_execution_id
    assert metadata["error_code"] == "" and metadata["job_failed_for_good"] is False
    assert event.description.endswith(f"succeeded, execution {op.result_execution_id}")
    assert check.passed and check.check_name == "operation_succeeded"


def test_a_failure_names_the_execution_its_site_recorded(runtime, clean_database, world):
    # The run failed: the site records a failed execution, then finishes the operation with an error (no
    # result): the job, out of attempts, failed for good, and its event names that execution.
    with clean_database.session() as session:
        op = claimed_job(session, lease_expire_time=datetime.now(UTC) + timedelta(minutes=5), max_attempts=1)
        execution = recorded_execution(session, op, status="failed", ended_at=datetime.now(UTC))
        _end(session, op.id, OperationState.FAILED, error=_error("INTERNAL", "exit 1"))
    result = tick(operations_sensor, runtime)
    (check,) = result.asset_events
    assert not check.passed and check.metadata["execution_id"].value == execution.id
    assert check.description == (
        f"JOB FAILED: job {op.job_id} has no attempt left; operation {op.id} of job {op.job_id} at site "
        f"site-d, attempt 1 of 1: failed, INTERNAL: exit 1, execution {execution.id}"
    )
    assert json.loads(result.cursor)["passing"] is False


def test_an_ending_that_commits_late_is_recorded_once_visible(runtime, clean_database, world):
    lease = datetime.now(UTC) + timedelta(minutes=5)
    with clean_database.session() as session:
        slow_op = claimed_job(session, lease_expire_time=lease)
        fast_op = claimed_job(session, lease_expire_time=lease)
    late = clean_database.sessionmaker()
    try:
        # Ends first (takes its end_seq now), commits last.
        _end(late, slow_op.id, OperationState.FAILED, error=_error("INTERNAL", "slow"))
        with clean_database.session() as session:
            _end(
                session,
                fast_op.id,
                OperationState.FAILED,
                error=_error("INTERNAL", "f"),
            )
        first = tick(operations_sensor, runtime)
        assert [e.metadata["operation_id"].value for e in first.asset_events] == [fast_op.id]
        assert len(json.loads(first.cursor)["gaps"]) == 1
        late.commit()
    finally:
        late.close()

    second = tick(operations_sensor, runtime, first.cursor)
    assert [e.metadata["operation_id"].value for e in second.asset_events] == [slow_op.id]
    assert "gaps" not in json.loads(second.cursor)
    assert isinstance(tick(operations_sensor, runtime, second.cursor), SkipReason)


def test_a_site_written_error_is_bounded(runtime, clean_database, world):
    with clean_database.session() as session:
        op = claimed_job(session, lease_expire_time=datetime.now(UTC) + timedelta(minutes=5))
        _end(session, op.id, OperationState.FAILED, error=_error("INTERNAL", "x" * 100_000))
    (event,) = tick(operations_sensor, runtime).asset_events
    assert event.metadata["error_message"].value == "x" * ERROR_TEXT_CHARS


def test_the_database_numbers_endings_whoever_ends_them(clean_database, world):
    # A plain UPDATE (no runtime code at all) still gets its end_seq: the trigger does it.
    with clean_database.session() as session:
        op = claimed_job(session, lease_expire_time=datetime.now(UTC))
    with clean_database.session() as session:
        session.execute(
            sa.text(
                "UPDATE operations SET state = 'expired', done = true, "
                'error = \'{"code": "DEADLINE_EXCEEDED", "message": "m"}\' WHERE id = :id'
            ),
            {"id": op.id},
        )
        assert session.scalar(sa.select(Operation.end_seq).where(Operation.id == op.id)) is not None
        open_op = claimed_job(session, lease_expire_time=datetime.now(UTC))
        assert session.scalar(sa.select(Operation.end_seq).where(Operation.id == open_op.id)) is None


def test_database_outage_fails_the_tick(settings):
    with pytest.raises(sa.exc.OperationalError):
        tick(
            operations_sensor,
            unreachable(settings),
        )
