"""The Dagster code location (loaded by workspace.yaml): wiring only; the parts live in nmdc_runtime.dagster.

The one place the Dagster code reads the runtime settings (`NMDC_*`): the resource carries them whole, the
health sensor takes its interval from them, and everything below reads them from there.
"""

from __future__ import annotations

from dagster import Definitions

from nmdc_runtime.config import get_settings
from nmdc_runtime.dagster.assets import external_assets, runtime_status
from nmdc_runtime.dagster.checks import runtime_health_checks
from nmdc_runtime.dagster.outcomes import outcome_checks
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors import data_resources, executions, health, operations, reaper

_settings = get_settings()

defs = Definitions(
    assets=[*external_assets, runtime_status],
    asset_checks=[runtime_health_checks, outcome_checks],
    sensors=[
        data_resources.data_resources_sensor,
        executions.executions_sensor,
        operations.operations_sensor,
        reaper.operations_reaper,
        health.runtime_health_sensor(_settings.health_interval_seconds),
    ],
    resources={"runtime": RuntimeDatabase(_settings)},
)
