"""The code location loads, its sensors run without a click, its checks exist, and the asset materializes."""

from __future__ import annotations

import importlib

from dagster import AssetCheckKey, AssetKey, DefaultSensorStatus, materialize

from nmdc_runtime import config
from nmdc_runtime.dagster.assets import runtime_status
from nmdc_runtime.dagster.checks import SPECS
from nmdc_runtime.dagster.outcomes import EXECUTION_SUCCEEDED, OPERATION_SUCCEEDED
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.data_resources import DATA_RESOURCES_SENSOR, data_resources_sensor
from nmdc_runtime.dagster.sensors.executions import EXECUTIONS_SENSOR
from nmdc_runtime.dagster.sensors.health import RUNTIME_HEALTH
from nmdc_runtime.dagster.sensors.operations import OPERATIONS_SENSOR
from nmdc_runtime.dagster.sensors.reaper import OPERATIONS_REAPER
from nmdc_runtime.definitions import defs
from tests.dagster.conftest import tick


def test_definitions_load_with_sensors_running_by_default():
    repository = defs.get_repository_def()
    sensors = {sensor.name: sensor for sensor in repository.sensor_defs}
    assert set(sensors) == {
        DATA_RESOURCES_SENSOR,
        EXECUTIONS_SENSOR,
        OPERATIONS_SENSOR,
        OPERATIONS_REAPER,
        RUNTIME_HEALTH,
    }
    assert {sensor.default_status for sensor in sensors.values()} == {DefaultSensorStatus.RUNNING}
    # The data resources sensor ticks on every daemon loop: its interval is the registration-to-job latency.
    assert sensors[DATA_RESOURCES_SENSOR].minimum_interval_seconds <= 5
    # No schedule: everything on a clock is a sensor that works inside its tick.
    assert list(repository.schedule_defs) == []
    keys = set(repository.asset_graph.get_all_asset_keys())
    assert {AssetKey(k) for k in ("jobs", "executions", "operations", "runtime_status")} <= keys
    outcome_specs = [EXECUTION_SUCCEEDED, OPERATION_SUCCEEDED]
    assert repository.asset_graph.asset_check_keys == {
        AssetCheckKey(s.asset_key, s.name) for s in [*SPECS, *outcome_specs]
    }
    assert isinstance(defs.resources["runtime"], RuntimeDatabase)


def test_each_sensor_links_the_asset_whose_events_show_its_work():
    # Every tick is SKIPPED (no run requested), productive or idle: the sensor's page links the assets where
    # what it did shows (its "Target"), and its description says so.
    shows = {
        DATA_RESOURCES_SENSOR: "jobs",
        EXECUTIONS_SENSOR: "executions",
        OPERATIONS_SENSOR: "operations",
        OPERATIONS_REAPER: "operations",
        RUNTIME_HEALTH: "runtime_status",
    }
    repository = defs.get_repository_def()
    for sensor in repository.sensor_defs:
        assert sensor.asset_selection.resolve(repository.asset_graph) == {AssetKey(shows[sensor.name])}
        assert "skipped" in sensor.description and shows[sensor.name] in sensor.description


def test_settings_reach_the_sensor_interval_and_the_thresholds(monkeypatch):
    monkeypatch.setenv("NMDC_HEALTH_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("NMDC_CHECK_FAILED_OPERATIONS_SHARE", "0.5")
    monkeypatch.setenv("NMDC_CHECK_UNCLAIMED_JOB_SECONDS", "77")
    config.get_settings.cache_clear()
    try:
        import nmdc_runtime.definitions as module

        loaded = importlib.reload(module).defs
        health = next(s for s in loaded.get_repository_def().sensor_defs if s.name == RUNTIME_HEALTH)
        assert health.minimum_interval_seconds == 5
        resource = loaded.resources["runtime"]
        assert (
            resource.settings.check_failed_operations_share,
            resource.settings.check_unclaimed_job_seconds,
        ) == (0.5, 77)
    finally:
        monkeypatch.undo()
        config.get_settings.cache_clear()
        importlib.reload(module)


def test_runtime_status_materializes(runtime, clean_database, make_workflow, make_data_resources):
    make_workflow("wf-1", ["metagenome"])
    make_data_resources("metagenome", n=3)
    make_data_resources("proteome", n=2)
    tick(data_resources_sensor, runtime)
    make_data_resources("proteome", n=1)

    result = materialize([runtime_status], resources={"runtime": runtime})

    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = {name: value.value for name, value in event.materialization.metadata.items()}
    assert metadata["jobs_unclaimed"] == 3
    assert metadata["jobs_failed"] == 0
    assert metadata["unmatched_data_resources"] == 1
    assert metadata["pending_backfills"] == 0
    assert metadata["lapsed_leases"] == 0
    assert metadata["oldest_unclaimed_job_age_seconds"] >= 0
