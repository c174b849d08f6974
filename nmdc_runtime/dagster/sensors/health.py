"""The health sensor: `runtime_status` recorded and the asset checks evaluated on a clock, without a run."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

from datetime import UTC, datetime

from dagster import (
    AssetMaterialization,
    AssetSelection,
    ResourceParam,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
)

from nmdc_runtime.dagster.assets import RUNTIME_STATUS
from nmdc_runtime.dagster.checks import health
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.ticks import runtime_sensor

RUNTIME_HEALTH = "runtime_health"


def runtime_health_sensor(minimum_interval_seconds: int) -> SensorDefinition:
    """The sensor that records `runtime_status` and evaluates the asset checks every
    `minimum_interval_seconds` (NMDC_HEALTH_INTERVAL_SECONDS), and at start-up: its first tick."""

    @runtime_sensor(
        RUNTIME_HEALTH,
        every=minimum_interval_seconds,
        shows=AssetSelection.assets(RUNTIME_STATUS),
        description=(
            f"Every {minimum_interval_seconds} s: records runtime_status (the queue's health, plotted on the "
            "asset's Plots tab) and evaluates the asset checks of jobs and operations, without a run; every "
            "tick therefore shows as skipped, and says what it found."
        ),
    )
    def runtime_health(context: SensorEvaluationContext, runtime: ResourceParam[RuntimeDatabase]):
        figures, findings = health(runtime, now=datetime.now(UTC))
        failing = [finding.spec.name for finding in findings if not finding.passed]
        summary = (
            f"recorded runtime_status ({figures['jobs_unclaimed']} unclaimed jobs, "
            f"{figures['open_operations']} open operations); checks: {len(findings) - len(failing)} passed"
            + (f", {len(failing)} failing: {', '.join(failing)}" if failing else "")
        )
        context.log.info(summary)
        return SensorResult(
            asset_events=[
                AssetMaterialization(RUNTIME_STATUS, description=summary, metadata=figures),
                *(finding.evaluation() for finding in findings),
            ],
            skip_reason=summary,
        )

    return runtime_health
