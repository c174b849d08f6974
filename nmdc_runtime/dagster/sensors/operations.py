"""The operations sensor: each operation that ends shows up in the UI, a success or a cancel as an observation
of the `operations` asset, a failure or an expiry as a failing evaluation of its check `operation_succeeded`
(`nmdc_runtime.dagster.outcomes`); the one after which a job failed for good says so."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

from dagster import AssetSelection, ResourceParam, SensorEvaluationContext

from nmdc_runtime.dagster import outcomes
from nmdc_runtime.dagster.assets import OPERATIONS
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.ticks import count, first, report_feed, runtime_sensor, tally
from nmdc_runtime.store import pipeline as pipeline_store

OPERATIONS_SENSOR = "operations_sensor"
DESCRIPTION = (
    "Records each operation that ends: succeeded or canceled as an observation of the operations asset (its "
    "Events tab), failed or expired as a failing result of its check operation_succeeded (its Checks tab), "
    "'JOB FAILED' first when the job has no attempt left. Every tick shows as skipped, since it launches no "
    "run; the ones that recorded something say so. Cursor: the highest end_seq recorded (end_seq numbers "
    "operations in the order they ended), the lower ones not visible yet, whether the check passes."
)
"""What the UI says of the sensor."""


def _summary(rows: list[pipeline_store.OperationEnding]) -> str:
    summary = f"recorded {count(len(rows), 'ended operation')} ({tally(row.state for row in rows)})"
    final = [row.job_id for row in rows if row.job_failed_for_good]
    if final:
        summary += f"; JOB FAILED, no attempt left: {first(final)}"
    return summary


@runtime_sensor(OPERATIONS_SENSOR, every=5, description=DESCRIPTION, shows=AssetSelection.assets(OPERATIONS))
def operations_sensor(context: SensorEvaluationContext, runtime: ResourceParam[RuntimeDatabase]):
    """Record operations that ended and were not recorded yet, in the order they ended (`end_seq`)."""
    return report_feed(
        context,
        runtime,
        fetch=pipeline_store.operations_ended_after,
        seq=lambda row: row.end_seq,
        report=outcomes.OPERATION_OUTCOMES.record,
        idle="no operation ended",
        summarize=_summary,
    )
