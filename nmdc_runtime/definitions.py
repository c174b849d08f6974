"""The Dagster code location (loaded by workspace.yaml): wiring only; the parts live in nmdc_runtime.dagster.

The one place the Dagster code reads the runtime settings (`NMDC_*`): they fill the resource's fields and the
health sensor's interval, and everything below takes them from there.
"""

from __future__ import annotations

from dagster import Definitions

from nmdc_runtime.config import get_settings
from nmdc_runtime.dagster.assets import external_assets, runtime_status
from nmdc_runtime.dagster.checks import runtime_health_checks
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors import runtime_health_sensor, sensors

_settings = get_settings()

defs = Definitions(
    assets=[*external_assets, runtime_status],
    asset_checks=[runtime_health_checks],
    sensors=[*sensors, runtime_health_sensor(_settings.health_interval_seconds)],
    resources={"runtime": RuntimeDatabase.from_settings(_settings)},
)
