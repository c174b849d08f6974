"""The sensors' state changes: data resources matched to workflows in batches, one transaction each."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from nmdc_runtime.services.transactions import transaction
from nmdc_runtime.store import pipeline as pipeline_store
from nmdc_runtime.store.pipeline import Batch


def match_new_data_resources(session: Session, *, limit: int, max_attempts: int, created_by: str) -> Batch:
    """Make the jobs of the next `limit` unmatched data resources (see `pipeline_store.pipeline`), in one transaction."""
    with transaction(session):
        return pipeline_store.match_new_data_resources(
            session, limit=limit, max_attempts=max_attempts, created_by=created_by
        )


def backfill_workflow(
    session: Session,
    *,
    workflow_id: str,
    updated_at: datetime,
    after_seq: int,
    limit: int,
    max_attempts: int,
    created_by: str,
) -> tuple[Batch, bool]:
    """One batch of a workflow's backfill, in one transaction: the rows, and whether the backfill is finished
    (recorded as of `updated_at`; False too when the workflow changed meanwhile, so the next tick starts
    again)."""
    with transaction(session):
        batch = pipeline_store.backfill_workflow(
            session,
            workflow_id=workflow_id,
            after_seq=after_seq,
            limit=limit,
            max_attempts=max_attempts,
            created_by=created_by,
        )
        finished = len(
            {row.data_resource_id for row in batch.rows}
        ) < limit and pipeline_store.mark_backfilled(session, workflow_id=workflow_id, updated_at=updated_at)
        return batch, finished
