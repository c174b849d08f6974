"""The Dagster code location (loaded by workspace.yaml): wiring only; the parts live in nmdc_runtime.dagster.

The one place the Dagster code reads the runtime settings (`NMDC_*`): they fill the resource's fields, and
everything below takes them from there.
"""

from __future__ import annotations

from dagster import Definitions

from nmdc_runtime.config import get_settings
from nmdc_runtime.dagster.assets import external_assets, runtime_status
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.schedules import jobs, schedules
from nmdc_runtime.dagster.sensors import sensors

defs = Definitions(
    assets=[*external_assets, runtime_status],
    jobs=jobs,
    schedules=schedules,
    sensors=sensors,
    resources={"runtime": RuntimeDatabase.from_settings(get_settings())},
)
