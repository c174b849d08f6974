"""The executions sensor: every execution once in the UI, including ones whose insert commits late."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetMaterialization,
    AssetSelection,
    SensorResult,
    SkipReason,
    materialize,
)

from nmdc_runtime.dagster.assets import EXECUTIONS, external_assets
from nmdc_runtime.dagster.outcomes import outcome_checks
from nmdc_runtime.dagster.sensors.executions import executions_sensor
from nmdc_runtime.dagster.sensors.ticks import GAP_WINDOW, next_seq_cursor
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Execution, Job
from tests.dagster.conftest import tick, unreachable


@pytest.fixture
def job(clean_database, make_workflow, site) -> Job:
    make_workflow("wf-1", ["metagenome"])
    with clean_database.session() as session:
        row = Job(
            id=new_id("job"), workflow_id="wf-1", config={}, max_attempts=3, status="claimed", attempts=1
        )
        session.add(row)
    return row


def _execution(job: Job, **values) -> Execution:
    now = datetime.now(UTC)
    return Execution(
        id=new_id("exec"),
        job_id=job.id,
        site_id="site-d",
        operation_id="op-1",
        workflow_id=job.workflow_id,
        status=values.pop("status", "succeeded"),
        started_at=now - timedelta(minutes=5),
        ended_at=now,
        output_ids=values.pop("output_ids", ["dr-out-1"]),
        details={},
        **values,
    )


def _materialized(result) -> list[str]:
    return [
        e.metadata["execution_id"].value for e in result.asset_events if isinstance(e, AssetMaterialization)
    ]


def _checks(result) -> list[AssetCheckEvaluation]:
    return [event for event in result.asset_events if isinstance(event, AssetCheckEvaluation)]


def test_a_success_is_a_materialization_and_a_failure_a_failing_check_naming_it(runtime, clean_database, job):
    with clean_database.session() as session:
        first, second = _execution(job), _execution(job, status="failed", output_ids=[])
        session.add_all([first, second])

    result = tick(executions_sensor, runtime)

    assert isinstance(result, SensorResult)
    assert result.skip_reason.skip_message == "reported 2 executions (1 failed, 1 succeeded) of 1 workflow"
    (event, check) = result.asset_events
    assert isinstance(event, AssetMaterialization)
    assert event.asset_key == EXECUTIONS and event.partition is None
    metadata = {name: value.value for name, value in event.metadata.items()}
    assert metadata["execution_id"] == first.id
    assert metadata["api_path"] == f"/jobs/{job.id}/executions/{first.id}"
    assert metadata["job_id"] == job.id and metadata["workflow_id"] == "wf-1"
    assert metadata["site_id"] == "site-d"
    assert metadata["operation_id"] == "op-1"
    assert metadata["status"] == "succeeded"
    assert metadata["outputs"] == ["dr-out-1"]
    # The failed one is a failing check that names it, red, and nothing else.
    assert isinstance(check, AssetCheckEvaluation)
    assert (check.asset_key, check.check_name) == (EXECUTIONS, "execution_succeeded")
    assert check.passed is False and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["execution_id"].value == second.id
    assert check.metadata["status"].value == "failed"
    assert (
        check.description
        == f"FAILED: execution {second.id} of job {job.id} by site site-d (workflow wf-1): failed"
    )
    assert json.loads(result.cursor)["passing"] is False

    again = tick(executions_sensor, runtime, result.cursor)
    assert isinstance(again, SkipReason) and again.skip_message.startswith("idle: no new executions")


def test_no_materialization_names_a_failed_execution(runtime, clean_database, job):
    with clean_database.session() as session:
        executions = [_execution(job, status="failed" if i % 3 else "succeeded") for i in range(12)]
        session.add_all(executions)
    result = tick(executions_sensor, runtime)
    failed = {e.id for e in executions if e.status == "failed"}
    materialized = {
        event.metadata["execution_id"].value
        for event in result.asset_events
        if isinstance(event, AssetMaterialization)
    }
    failing = {check.metadata["execution_id"].value for check in _checks(result) if not check.passed}
    assert materialized == {e.id for e in executions} - failed
    assert failing == failed


def test_the_check_passes_again_once_a_later_execution_succeeds(runtime, clean_database, job):
    with clean_database.session() as session:
        session.add(_execution(job, status="failed"))
    failed = tick(executions_sensor, runtime)
    assert [c.passed for c in _checks(failed)] == [False]

    with clean_database.session() as session:
        later = _execution(job)
        session.add(later)
    recovered = tick(executions_sensor, runtime, failed.cursor)
    (passing,) = _checks(recovered)
    assert passing.passed and passing.metadata["execution_id"].value == later.id
    assert passing.description.startswith(f"OK: execution {later.id}")

    # While it passes, a success is a materialization and nothing more.
    with clean_database.session() as session:
        session.add(_execution(job))
    quiet = tick(executions_sensor, runtime, recovered.cursor)
    assert _checks(quiet) == [] and len(quiet.asset_events) == 1
    # A cursor that does not know (reset by hand) passes it once more.
    with clean_database.session() as session:
        session.add(_execution(job))
    reset = tick(executions_sensor, runtime, json.dumps({"seq": json.loads(quiet.cursor)["seq"]}))
    assert [c.passed for c in _checks(reset)] == [True]


def test_an_insert_that_commits_late_is_reported_once_visible(runtime, clean_database, job):
    late = clean_database.sessionmaker()
    try:
        slow = _execution(job)
        late.add(slow)
        late.flush()  # takes its seq now, commits later
        with clean_database.session() as session:
            fast = _execution(job)
            session.add(fast)
        first = tick(executions_sensor, runtime)
        assert _materialized(first) == [fast.id]
        assert json.loads(first.cursor)["gaps"] == [slow.seq]
        late.commit()
    finally:
        late.close()

    second = tick(executions_sensor, runtime, first.cursor)
    assert _materialized(second) == [slow.id]
    assert "gaps" not in json.loads(second.cursor)
    assert isinstance(tick(executions_sensor, runtime, second.cursor), SkipReason)


def test_cursor_arithmetic():
    assert next_seq_cursor(0, [], []) == (0, [])
    assert next_seq_cursor(0, [], [1, 2, 3]) == (3, [])
    assert next_seq_cursor(3, [], [5, 7]) == (7, [4, 6])
    assert next_seq_cursor(7, [4, 6], [6]) == (7, [4])
    # Rolled-back seqs are given up once far enough behind; a huge jump does not list a huge range.
    high, gaps = next_seq_cursor(7, [4], [7 + 10 * GAP_WINDOW])
    assert high == 7 + 10 * GAP_WINDOW and len(gaps) == GAP_WINDOW - 1 and 4 not in gaps


def test_database_outage_fails_the_tick(settings):
    with pytest.raises(sa.exc.OperationalError):
        tick(
            executions_sensor,
            unreachable(settings),
        )


def test_execute_evaluates_the_last_execution_reported(runtime, clean_database, job):
    with clean_database.session() as session:
        session.add(_execution(job))
        session.flush()
        failed = _execution(job, status="failed")
        session.add(failed)

    # As the check's "Execute" button runs it: in a run, on the last execution and the last operation outcome.
    result = materialize(
        [*external_assets, outcome_checks],
        selection=AssetSelection.checks(outcome_checks),
        resources={"runtime": runtime},
    )

    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["execution_succeeded"].passed is False
    assert evaluations["execution_succeeded"].metadata["execution_id"].value == failed.id
    assert evaluations["operation_succeeded"].passed is True  # no operation ended
