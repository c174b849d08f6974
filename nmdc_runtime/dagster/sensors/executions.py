"""The executions sensor: each execution a site registers shows up in the UI, as an event of the
`executions` asset of its workflow."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

from dagster import (
    AssetMaterialization,
    MetadataValue,
    ResourceParam,
    SensorEvaluationContext,
)

from nmdc_runtime.dagster.assets import EXECUTIONS
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.ticks import count, report_feed, runtime_sensor, tally
from nmdc_runtime.store import pipeline as pipeline_store

EXECUTIONS_SENSOR = "executions_sensor"
DESCRIPTION = (
    "Records each execution a site registers as a materialization of the `executions` asset. Cursor: "
    "the highest execution seq reported and the lower seqs not visible yet."
)
"""What the UI says of the sensor."""


def _execution_event(row: pipeline_store.ExecutionRow) -> AssetMaterialization:
    path = f"/jobs/{row.job_id}/executions/{row.id}"
    return AssetMaterialization(
        asset_key=EXECUTIONS,
        partition=row.workflow_id,
        description=f"execution {row.id} of job {row.job_id} by site {row.site_id}: {row.status}",
        metadata={
            "execution_id": row.id,
            "api_path": path,
            "job_id": row.job_id,
            "workflow_id": row.workflow_id,
            "site_id": row.site_id,
            "operation_id": row.operation_id,
            "status": row.status,
            "started_at": row.started_at.isoformat(),
            "ended_at": row.ended_at.isoformat(),
            "outputs": MetadataValue.json(row.output_ids),
            "output_count": len(row.output_ids),
            "seq": row.seq,
        },
    )


@runtime_sensor(EXECUTIONS_SENSOR, every=5, description=DESCRIPTION)
def executions_sensor(context: SensorEvaluationContext, runtime: ResourceParam[RuntimeDatabase]):
    """Report executions not reported yet: `seq` above the cursor, or a gap the cursor still awaits."""
    return report_feed(
        context,
        runtime,
        fetch=pipeline_store.executions_after,
        seq=lambda row: row.seq,
        event=_execution_event,
        idle="no new executions",
        summarize=lambda rows: (
            f"reported {count(len(rows), 'execution')} ({tally(row.status for row in rows)}) "
            f"of {count(len({row.workflow_id for row in rows}), 'workflow')}"
        ),
    )
