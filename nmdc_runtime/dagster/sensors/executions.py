"""The executions sensor: each execution a site registers shows up in the UI, a success as a materialization
of the `executions` asset, a failure as a failing evaluation of its check `execution_succeeded`
(`nmdc_runtime.dagster.outcomes`)."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

from dagster import AssetSelection, ResourceParam, SensorEvaluationContext

from nmdc_runtime.dagster import outcomes
from nmdc_runtime.dagster.assets import EXECUTIONS
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.ticks import count, report_feed, runtime_sensor, tally
from nmdc_runtime.store import pipeline as pipeline_store

EXECUTIONS_SENSOR = "executions_sensor"
DESCRIPTION = (
    "Records each execution a site registers: a success as a materialization of the executions asset (its "
    "Events tab), a failure as a failing result of its check execution_succeeded (its Checks tab), naming "
    "the execution. Every tick shows as skipped, since it launches no run; the ones that recorded something "
    "say so. Cursor: the highest execution seq reported, the lower ones not visible yet, whether the check passes."
)
"""What the UI says of the sensor."""


def _summary(rows: list[pipeline_store.ExecutionRow]) -> str:
    return (
        f"reported {count(len(rows), 'execution')} ({tally(row.status for row in rows)}) "
        f"of {count(len({row.workflow_id for row in rows}), 'workflow')}"
    )


@runtime_sensor(EXECUTIONS_SENSOR, every=5, description=DESCRIPTION, shows=AssetSelection.assets(EXECUTIONS))
def executions_sensor(context: SensorEvaluationContext, runtime: ResourceParam[RuntimeDatabase]):
    """Report executions not reported yet: `seq` above the cursor, or a gap the cursor still awaits."""
    return report_feed(
        context,
        runtime,
        fetch=pipeline_store.executions_after,
        seq=lambda row: row.seq,
        report=outcomes.EXECUTION_OUTCOMES.record,
        idle="no new executions",
        summarize=_summary,
    )
