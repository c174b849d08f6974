"""The data resources sensor, evaluated in-process against a real database."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from dagster import SensorEvaluationContext, SensorResult, SkipReason, build_sensor_context, instance_for_test

from nmdc_runtime.dagster.assets import JOBS, workflow_partitions
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.data_resources import DATA_RESOURCES_SENSOR, data_resources_sensor
from nmdc_runtime.dagster.sensors.ticks import SAMPLE_SIZE, tick_label
from nmdc_runtime.models import DataResource, Job, Workflow
from nmdc_runtime.schemas.data import DataResourceRead
from tests.dagster.conftest import job_inputs, jobs, pairs, tick, unreachable


def _cursor(result) -> dict:
    return json.loads(result.cursor)


def _drain(runtime, cursor=None):
    """Tick until the sensor has nothing left to do; return the results."""
    results = []
    for _ in range(10):
        result = tick(data_resources_sensor, runtime, cursor)
        results.append(result)
        if isinstance(result, SkipReason):
            return results
        cursor = result.cursor
    raise AssertionError("the sensor never settled")


def test_new_data_resources_become_one_job_per_matching_workflow(
    runtime, clean_database, settings, make_workflow, make_data_resources
):
    make_workflow("wf-assembly", ["metagenome"])
    drs = make_data_resources("metagenome", n=3)
    make_data_resources("proteome", n=2)

    result = tick(data_resources_sensor, runtime)

    assert isinstance(result, SensorResult)
    # Dagster shows a tick without runs as skipped: its text says what it made.
    assert result.skip_reason.skip_message == (
        "made 3 jobs of wf-assembly for 3 data resources; 2 new data resources matched no enabled workflow"
    )
    assert pairs(clean_database) == sorted(("wf-assembly", dr) for dr in drs)
    made = jobs(clean_database)
    assert {job.status for job in made} == {"unclaimed"}
    assert {job.max_attempts for job in made} == {settings.max_attempts}
    assert {job.created_by for job in made} == {f"dagster:sensor:{DATA_RESOURCES_SENSOR}:cursor:"}
    assert job_inputs(clean_database) == sorted((job.id, job.trigger_data_resource_id) for job in made)
    # All five were matched, the proteome ones against no workflow.
    with clean_database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).where(DataResource.matched_at.is_(None))) == 0
        top = session.scalar(sa.select(sa.func.max(DataResource.seq)))
    assert _cursor(result)["seq"] == top

    (event,) = result.asset_events
    assert event.asset_key == JOBS and event.partition == "wf-assembly"
    assert event.metadata["jobs_created"].value == 3
    assert sorted(event.metadata["job_ids"].value) == sorted(job.id for job in made)
    assert sorted(event.metadata["data_resource_ids"].value) == sorted(drs)
    assert event.metadata["created_by"].value == made[0].created_by
    (request,) = result.dynamic_partitions_requests
    assert request.partitions_def_name == workflow_partitions.name
    assert list(request.partition_keys) == ["wf-assembly"]


def test_job_config_holds_the_workflow_config_and_the_data_resource_as_the_api_shows_it(
    runtime, clean_database, make_workflow, make_data_resources
):
    make_workflow(
        "wf-1", ["metagenome"], config={"threads": 8, "nested": {"k": [1, 2]}, "data_resources": "x"}
    )
    drs = make_data_resources("metagenome", n=2)
    with clean_database.session() as session:
        # isoformat() drops a zero fraction: the SQL must too.
        session.execute(
            sa.update(DataResource)
            .where(DataResource.id == drs[0])
            .values(created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        )
        session.execute(
            sa.update(DataResource)
            .where(DataResource.id == drs[1])
            .values(created_at=datetime(2026, 1, 2, 3, 4, 5, 120, tzinfo=UTC))
        )

    tick(data_resources_sensor, runtime)

    with clean_database.session() as session:
        workflow = session.get(Workflow, "wf-1")
        for job in session.scalars(sa.select(Job)):
            dr = session.get(DataResource, job.trigger_data_resource_id)
            shown = DataResourceRead.model_validate(dr).model_dump(mode="json")
            assert job.config == {**workflow.config, "data_resources": [shown], "inputs": {}, "group": None}


def test_no_new_rows_is_a_skip_that_says_so(runtime, clean_database, make_workflow):
    assert isinstance(tick(data_resources_sensor, runtime), SkipReason)
    make_workflow("wf-1", ["metagenome"])
    results = _drain(runtime)
    assert results[-1].skip_message.startswith("idle: no new data resources")
    assert jobs(clean_database) == []


def test_replayed_tick_makes_no_duplicates(runtime, clean_database, make_workflow, make_data_resources):
    make_workflow("wf-1", ["metagenome"])
    drs = make_data_resources("metagenome", n=4)
    first = tick(data_resources_sensor, runtime, cursor=None)
    # The same tick again (the daemon lost the first one's cursor), then as if its commit never marked them.
    again = tick(data_resources_sensor, runtime, cursor=None)
    with clean_database.session() as session:
        session.execute(sa.update(DataResource).values(matched_at=None))
    third = tick(data_resources_sensor, runtime, cursor=None)

    assert pairs(clean_database) == sorted(("wf-1", dr) for dr in drs)
    assert isinstance(first, SensorResult)
    assert not getattr(again, "asset_events", None)
    # The rows were matched again, but every job already existed: no event claims new jobs.
    assert isinstance(third, SensorResult) and third.asset_events == []


@pytest.mark.parametrize("cursor", ['{"seq": 0}', "0", "not json", '{"seq": -5, "backfills": {}}'])
def test_cursor_moved_back_makes_no_duplicates(
    runtime, clean_database, make_workflow, make_data_resources, cursor
):
    make_workflow("wf-1", ["metagenome"])
    drs = make_data_resources("metagenome", n=3)
    first = tick(data_resources_sensor, runtime)
    make_data_resources("metagenome", n=1)
    _drain(runtime, cursor=cursor)
    assert len(jobs(clean_database)) == 4
    assert {dr for _, dr in pairs(clean_database)} >= set(drs)
    assert _cursor(first)["seq"] >= 3


def test_workflows_matching_several_types_and_several_workflows_per_type(
    runtime, clean_database, make_workflow, make_data_resources
):
    make_workflow("wf-both", ["metagenome", "metatranscriptome"])
    make_workflow("wf-mg", ["metagenome"])
    mg = make_data_resources("metagenome", n=2)
    mt = make_data_resources("metatranscriptome", n=1)
    make_data_resources("lipidome", n=1)

    result = tick(data_resources_sensor, runtime)

    expected = [("wf-both", dr) for dr in mg + mt] + [("wf-mg", dr) for dr in mg]
    assert pairs(clean_database) == sorted(expected)
    counts = {event.partition: event.metadata["jobs_created"].value for event in result.asset_events}
    assert counts == {"wf-both": 3, "wf-mg": 2}
    assert result.skip_reason.skip_message == (
        "made 5 jobs: 3 jobs of wf-both for 3 data resources; 2 jobs of wf-mg for 2 data resources; "
        "1 new data resource matched no enabled workflow"
    )


def test_disabled_workflows_get_no_jobs_until_enabled(
    runtime, clean_database, make_workflow, make_data_resources
):
    make_workflow("wf-off", ["metagenome"], enabled=False)
    drs = make_data_resources("metagenome", n=2)
    _drain(runtime)
    assert jobs(clean_database) == []

    # PATCH /workflows/{id} {"enabled": true} sets updated_at: that is what asks for a backfill.
    with clean_database.session() as session:
        session.execute(
            sa.update(Workflow).where(Workflow.id == "wf-off").values(enabled=True, updated_at=sa.func.now())
        )
    results = _drain(runtime)
    assert pairs(clean_database) == sorted(("wf-off", dr) for dr in drs)
    events = [e for r in results if isinstance(r, SensorResult) for e in r.asset_events]
    assert [e.metadata["reason"].value for e in events] == ["backfill"]


def test_workflow_created_later_is_backfilled_once(
    runtime, clean_database, make_workflow, make_data_resources
):
    old = make_data_resources("metagenome", n=5)
    make_data_resources("proteome", n=1)
    unmatched = tick(data_resources_sensor, runtime)
    assert (
        unmatched.skip_reason.skip_message == "made no job; 6 new data resources matched no enabled workflow"
    )
    assert jobs(clean_database) == []

    make_workflow("wf-late", ["metagenome"])
    new = make_data_resources("metagenome", n=1)
    result = tick(data_resources_sensor, runtime)

    assert pairs(clean_database) == sorted(("wf-late", dr) for dr in old + new)
    reasons = {e.metadata["reason"].value: e.metadata["jobs_created"].value for e in result.asset_events}
    # The new one is matched first (as new data), the backfill passes over it.
    assert reasons == {"new data resources": 1, "backfill": 5}
    assert result.skip_reason.skip_message == (
        "made 6 jobs: 5 jobs of wf-late for 5 data resources (backfill); 1 job of wf-late for 1 data resource"
    )
    with clean_database.session() as session:
        workflow = session.get(Workflow, "wf-late")
        assert workflow.backfilled_at == workflow.updated_at
    assert isinstance(tick(data_resources_sensor, runtime, result.cursor), SkipReason)
    assert len(jobs(clean_database)) == 6


def test_a_workflow_changed_again_is_backfilled_again_without_duplicates(
    runtime, clean_database, make_workflow, make_data_resources
):
    make_workflow("wf-1", ["metagenome"])
    mg = make_data_resources("metagenome", n=2)
    mt = make_data_resources("metatranscriptome", n=2)
    _drain(runtime)
    with clean_database.session() as session:
        session.execute(
            sa.update(Workflow)
            .where(Workflow.id == "wf-1")
            .values(data_types=["metagenome", "metatranscriptome"], updated_at=sa.func.now())
        )
    _drain(runtime)
    assert pairs(clean_database) == sorted(("wf-1", dr) for dr in mg + mt)


def test_batches_and_tick_budget(clean_database, settings, make_workflow, make_data_resources):
    make_workflow("wf-1", ["metagenome"])
    drs = make_data_resources("metagenome", n=7)
    small = RuntimeDatabase(settings, batch_size=2)
    tick(data_resources_sensor, small)
    assert len(jobs(clean_database)) == 7

    # A budget spent at once: each tick still runs one batch, and the backfill resumes where the last stopped.
    make_workflow("wf-2", ["metagenome"])
    hurried = RuntimeDatabase(settings, batch_size=2, tick_budget_seconds=1e-9)
    cursor = None
    made = []
    for _ in range(3):
        result = tick(data_resources_sensor, hurried, cursor)
        cursor = result.cursor
        made.append(sum(1 for workflow, _ in pairs(clean_database) if workflow == "wf-2"))
    assert made == [2, 4, 6]
    assert list(json.loads(cursor)["backfills"]) == ["wf-2"]
    _drain(hurried, cursor=cursor)
    assert pairs(clean_database) == sorted([("wf-1", dr) for dr in drs] + [("wf-2", dr) for dr in drs])


def test_big_batches_name_a_bounded_sample(runtime, clean_database, make_workflow, make_data_resources):
    make_workflow("wf-1", ["metagenome"])
    make_data_resources("metagenome", n=SAMPLE_SIZE + 5)
    (event,) = tick(data_resources_sensor, runtime).asset_events
    assert event.metadata["jobs_created"].value == SAMPLE_SIZE + 5
    assert len(event.metadata["job_ids"].value) == SAMPLE_SIZE
    assert event.metadata["ids_complete"].value is False


def test_database_outage_fails_the_tick(settings, clean_database):
    # Port 9 (discard) refuses connections: the tick must raise, not report "nothing new".
    down = unreachable(settings)
    with pytest.raises(sa.exc.OperationalError):
        tick(data_resources_sensor, down)


def test_jobs_name_the_daemon_tick_that_made_them():
    context = SensorEvaluationContext(
        instance_ref=None, log_key=["nmdc_runtime", DATA_RESOURCES_SENSOR, "4021"]
    )
    assert tick_label(context, DATA_RESOURCES_SENSOR) == f"dagster:sensor:{DATA_RESOURCES_SENSOR}:tick:4021"


def test_an_error_mid_tick_fails_it_but_records_the_committed_batches(
    clean_database, settings, make_workflow, make_data_resources
):
    make_workflow("wf-1", ["metagenome"])
    drs = make_data_resources("metagenome", n=3)
    # The third data resource's job insert fails, as an outage after the first batch would.
    with clean_database.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"""
                CREATE FUNCTION fail_job() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.trigger_data_resource_id = '{drs[2]}' THEN RAISE EXCEPTION 'injected failure'; END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER fail_job BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION fail_job();
                """
            )
        )
    try:
        runtime = RuntimeDatabase(settings, batch_size=2)
        with (
            instance_for_test() as instance,
            build_sensor_context(instance=instance, resources={"runtime": runtime}) as context,
        ):
            with pytest.raises(sa.exc.DBAPIError, match="injected failure"):
                data_resources_sensor(context)
            event = instance.get_latest_materialization_event(JOBS)
            assert sorted(event.asset_materialization.metadata["data_resource_ids"].value) == sorted(drs[:2])
        assert pairs(clean_database) == sorted(("wf-1", dr) for dr in drs[:2])
    finally:
        with clean_database.engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER fail_job ON jobs; DROP FUNCTION fail_job()"))
    # The failed batch rolled back: its data resource is still unmatched, and the next tick makes its job.
    tick(data_resources_sensor, RuntimeDatabase(settings))
    assert pairs(clean_database) == sorted(("wf-1", dr) for dr in drs)


def test_stale_backfill_progress_is_dropped_from_the_cursor(runtime, clean_database):
    result = tick(data_resources_sensor, runtime, '{"seq": 7, "backfills": {"wf-gone": ["2026-01-01", 5]}}')
    assert isinstance(result, SensorResult) and result.skip_reason is not None
    assert json.loads(result.cursor) == {"seq": 7}
    assert isinstance(tick(data_resources_sensor, runtime, result.cursor), SkipReason)
