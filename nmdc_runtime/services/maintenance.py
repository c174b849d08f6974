"""What runs on a clock (the Dagster reaper): lapsed leases ended, old operations and idempotency keys dropped,
the tallies' changes folded, the sites' judged endings pruned."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.services.transactions import transaction
from nmdc_runtime.store import drains as drains_store
from nmdc_runtime.store import idempotency as idempotency_store
from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store import pipeline as pipeline_store


def reap_lapsed_leases(session: Session, *, now: datetime, policy: Policy, limit: int = 1000) -> list[str]:
    """End up to `limit` open operations whose lease lapsed by `now`; return their ids.

    Each ends by `operations_rules.end_lapsed_operation`, the rule a claim applies when it meets a lapsed lease. Jobs
    another transaction has locked are skipped: that transaction applies the same rule itself, or renews the
    lease.
    """
    ended: list[str] = []
    with transaction(session):
        for op_id, job_id in operations_store.lapsed_operation_jobs(session, now=now, limit=limit):
            job = operations_store.lock_job(session, job_id=job_id, skip_locked=True)
            if job is None:
                continue
            op = operations_store.open_operation(session, job_id=job.id)
            if op is None or op.id != op_id or not operations_rules.lease_lapsed(op, now=now):
                continue
            operations_rules.end_lapsed_operation(
                op, job, now=now, retention_seconds=policy.operation_retention_seconds
            )
            ended.append(op_id)
    return ended


def delete_finished_operations(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """Delete up to `limit` finished operations past their `expire_time`; return how many.

    Executions are kept (they do not reference operations by foreign key).
    """
    with transaction(session):
        return operations_store.delete_finished(session, now=now, limit=limit)


def forget_idempotency_keys(session: Session, *, now: datetime, policy: Policy) -> int:
    """Forget `Idempotency-Key`s older than the retention period (a later repeat runs afresh); how many."""
    with transaction(session):
        return idempotency_store.delete_keys_before(
            session, before=now - timedelta(seconds=policy.idempotency_retention_seconds)
        )


def prune_site_endings(session: Session) -> int:
    """Forget the judged endings no site's fault streak reads any more (`store.drains.prune_endings`); how
    many."""
    with transaction(session):
        return drains_store.prune_endings(session)


def fold_tally_changes(session: Session) -> int:
    """Fold the changes the triggers appended into `tallies`, so reading them stays a few rows; how many."""
    with transaction(session):
        return pipeline_store.fold_tally_changes(session)
