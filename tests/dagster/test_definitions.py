"""The code location loads, its sensors and schedule run without a click, and the asset materializes."""

from __future__ import annotations

from dagster import AssetKey, DefaultScheduleStatus, DefaultSensorStatus, materialize

from nmdc_runtime.dagster.assets import runtime_status
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors import DATA_RESOURCES_SENSOR, EXECUTIONS_SENSOR, OPERATIONS_REAPER
from nmdc_runtime.definitions import defs
from tests.dagster.conftest import tick


def test_definitions_load_with_sensors_running_by_default():
    repository = defs.get_repository_def()
    sensors = {sensor.name: sensor for sensor in repository.sensor_defs}
    assert set(sensors) == {DATA_RESOURCES_SENSOR, EXECUTIONS_SENSOR, OPERATIONS_REAPER}
    assert {sensor.default_status for sensor in sensors.values()} == {DefaultSensorStatus.RUNNING}
    # The data resources sensor ticks on every daemon loop: its interval is the registration-to-job latency.
    assert sensors[DATA_RESOURCES_SENSOR].minimum_interval_seconds <= 5
    (schedule,) = repository.schedule_defs
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    keys = set(repository.asset_graph.get_all_asset_keys())
    assert {AssetKey("jobs"), AssetKey("executions"), AssetKey("runtime_status")} <= keys
    assert isinstance(defs.resources["runtime"], RuntimeDatabase)


def test_runtime_status_materializes(runtime, clean_database, make_workflow, make_data_resources):
    make_workflow("wf-1", ["metagenome"])
    make_data_resources("metagenome", n=3)
    make_data_resources("proteome", n=2)
    from nmdc_runtime.dagster.sensors import data_resources_sensor

    tick(data_resources_sensor, runtime)
    make_data_resources("proteome", n=1)

    result = materialize([runtime_status], resources={"runtime": runtime})

    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = {name: value.value for name, value in event.materialization.metadata.items()}
    assert metadata["jobs_unclaimed"] == 3
    assert metadata["unmatched_data_resources"] == 1
    assert metadata["pending_backfills"] == 0
    assert metadata["lapsed_leases"] == 0
