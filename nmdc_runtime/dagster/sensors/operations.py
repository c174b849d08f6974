"""The operations sensor: each operation that ends shows up in the UI, as an event of the `operations` asset
of its workflow, and the one after which a job failed for good says so."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

from dagster import (
    AssetObservation,
    MetadataValue,
    ResourceParam,
    SensorEvaluationContext,
)

from nmdc_runtime.dagster.assets import OPERATIONS
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.ticks import count, first, report_feed, runtime_sensor, tally
from nmdc_runtime.store import pipeline as pipeline_store

OPERATIONS_SENSOR = "operations_sensor"
DESCRIPTION = (
    "Records each operation that ends (succeeded, failed, expired, canceled) as an observation of the "
    "`operations` asset of its workflow. Cursor: the highest end_seq recorded and the lower ones not "
    "visible yet (end_seq numbers operations in the order they ended)."
)
"""What the UI says of the sensor."""

ERROR_TEXT_CHARS = 500
"""The longest error code or message of an operation shown in Dagster: sites write them."""


def _operation_event(row: pipeline_store.OperationEnding) -> AssetObservation:
    # The error is what the holding site sent: only its code and a bounded message are shown.
    error = row.error if isinstance(row.error, dict) else {}
    code = str(error.get("code") or "")[:ERROR_TEXT_CHARS]
    message = str(error.get("message") or "")[:ERROR_TEXT_CHARS]
    attempt = f"attempt {row.attempt} of {row.max_attempts}"
    if row.result_execution_id:
        outcome = f"{row.state}, execution {row.result_execution_id}"
    else:
        outcome = f"{row.state}, {code}: {message}" if code else row.state
    description = f"operation {row.id} of job {row.job_id} at site {row.site_id}, {attempt}: {outcome}"
    if row.job_failed_for_good:
        description = f"JOB FAILED: job {row.job_id} has no attempt left; {description}"
    return AssetObservation(
        asset_key=OPERATIONS,
        partition=row.workflow_id,
        description=description,
        metadata={
            "operation_id": MetadataValue.text(row.id),
            "api_path": f"/operations/{row.id}",
            "job_id": row.job_id,
            "workflow_id": row.workflow_id,
            "site_id": row.site_id,
            "attempt": row.attempt,
            "max_attempts": row.max_attempts,
            "state": row.state,
            "error_code": code,
            "error_message": message,
            "execution_id": row.result_execution_id or "",
            "job_status": row.job_status,
            "job_failed_for_good": row.job_failed_for_good,
            "ended_at": row.ended_at.isoformat(),
            "end_seq": row.end_seq,
        },
    )


def _summary(rows: list[pipeline_store.OperationEnding]) -> str:
    summary = f"recorded {count(len(rows), 'ended operation')} ({tally(row.state for row in rows)})"
    final = [row.job_id for row in rows if row.job_failed_for_good]
    if final:
        summary += f"; JOB FAILED, no attempt left: {first(final)}"
    return summary


@runtime_sensor(OPERATIONS_SENSOR, every=5, description=DESCRIPTION)
def operations_sensor(context: SensorEvaluationContext, runtime: ResourceParam[RuntimeDatabase]):
    """Record operations that ended and were not recorded yet, in the order they ended (`end_seq`)."""
    return report_feed(
        context,
        runtime,
        fetch=pipeline_store.operations_ended_after,
        seq=lambda row: row.end_seq,
        event=_operation_event,
        idle="no operation ended",
        summarize=_summary,
    )
