"""The reaper: lapsed leases end, finished operations and old idempotency keys go, tallies are folded, the
sites' judged endings pruned."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

from datetime import UTC, datetime

from dagster import AssetSelection, ResourceParam, SensorEvaluationContext, SkipReason

from nmdc_runtime.dagster.assets import OPERATIONS
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.ticks import count, first, runtime_sensor
from nmdc_runtime.services import maintenance as maintenance_service

OPERATIONS_REAPER = "operations_reaper"
DESCRIPTION = (
    "Ends operations whose lease lapsed: expired (DEADLINE_EXCEEDED; the job goes back to unclaimed, or "
    "fails once its attempts are used up), or canceled (CANCELLED) when a cancel was requested. Deletes "
    "finished operations past their expire_time (executions are kept), forgets old Idempotency-Keys, folds the "
    "job and execution tallies' changes and prunes the sites' judged endings. The operations it ends show on "
    "the operations asset (expired: a failing result of its check operation_succeeded; canceled: an event). "
    "Every tick shows as skipped, since it launches no run; the ones that did something say so."
)
"""What the UI says of the sensor."""

REAPER_LIMIT = 1000
"""Leases ended, or finished operations deleted, per tick."""


@runtime_sensor(OPERATIONS_REAPER, every=10, description=DESCRIPTION, shows=AssetSelection.assets(OPERATIONS))
def operations_reaper(context: SensorEvaluationContext, runtime: ResourceParam[RuntimeDatabase]):
    """Apply the API's own lease and retention rules (`nmdc_runtime.services.maintenance`) on a clock."""
    now = datetime.now(UTC)
    policy = runtime.policy()
    with runtime.session() as session:
        expired = maintenance_service.reap_lapsed_leases(session, now=now, policy=policy, limit=REAPER_LIMIT)
    with runtime.session() as session:
        deleted = maintenance_service.delete_finished_operations(session, now=now, limit=REAPER_LIMIT)
    with runtime.session() as session:
        forgotten = maintenance_service.forget_idempotency_keys(session, now=now, policy=policy)
    # Bookkeeping, not news: left out of the summary, so an idle runtime's reaper still says idle.
    with runtime.session() as session:
        maintenance_service.fold_tally_changes(session)
    with runtime.session() as session:
        maintenance_service.prune_site_endings(session)
    if not expired and not deleted and not forgotten:
        return SkipReason(
            "idle: no lapsed lease, no finished operation past its expire_time, no idempotency key past retention"
        )
    summary = (
        f"ended {count(len(expired), 'lapsed lease')}, deleted {count(deleted, 'finished operation')} past "
        f"expire_time, forgot {count(forgotten, 'idempotency key')} past retention"
    )
    if expired:
        summary += f": {first(expired)}"
    context.log.info(summary)
    return SkipReason(summary)
