"""The executions sensor: every execution once in the UI, including ones whose insert commits late."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dagster import SensorResult, SkipReason

from nmdc_runtime.dagster.assets import EXECUTIONS
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


def test_each_execution_is_one_event_with_its_api_path(runtime, clean_database, job):
    with clean_database.session() as session:
        first, second = _execution(job), _execution(job, status="failed", output_ids=[])
        session.add_all([first, second])

    result = tick(executions_sensor, runtime)

    assert isinstance(result, SensorResult)
    assert result.skip_reason.skip_message == "reported 2 executions (1 failed, 1 succeeded) of 1 workflow"
    events = {event.metadata["execution_id"].value: event for event in result.asset_events}
    assert set(events) == {first.id, second.id}
    event = events[first.id]
    assert event.asset_key == EXECUTIONS and event.partition == "wf-1"
    metadata = {name: value.value for name, value in event.metadata.items()}
    assert metadata["api_path"] == f"/jobs/{job.id}/executions/{first.id}"
    assert metadata["job_id"] == job.id
    assert metadata["site_id"] == "site-d"
    assert metadata["operation_id"] == "op-1"
    assert metadata["status"] == "succeeded"
    assert metadata["outputs"] == ["dr-out-1"]
    assert events[second.id].metadata["status"].value == "failed"

    again = tick(executions_sensor, runtime, result.cursor)
    assert isinstance(again, SkipReason) and again.skip_message.startswith("idle: no new executions")


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
        assert [e.metadata["execution_id"].value for e in first.asset_events] == [fast.id]
        assert json.loads(first.cursor)["gaps"] == [slow.seq]
        late.commit()
    finally:
        late.close()

    second = tick(executions_sensor, runtime, first.cursor)
    assert [e.metadata["execution_id"].value for e in second.asset_events] == [slow.id]
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
