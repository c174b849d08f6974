"""The reaper applies the API's lease and retention rules on a clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dagster import SkipReason

from nmdc_runtime.dagster.sensors.reaper import operations_reaper
from nmdc_runtime.models import Execution, IdempotencyKey, Job, Operation, tally_changes
from nmdc_runtime.store import pipeline as pipeline_store
from tests.dagster.conftest import claimed_job, tick, unreachable


def test_lapsed_leases_expire_and_old_finished_operations_go(runtime, clean_database, make_workflow, site):
    make_workflow("wf-1", ["metagenome"])
    now = datetime.now(UTC)
    with clean_database.session() as session:
        lapsed = claimed_job(session, lease_expire_time=now - timedelta(minutes=1))
        alive = claimed_job(session, lease_expire_time=now + timedelta(minutes=5))
        old = claimed_job(
            session,
            lease_expire_time=now - timedelta(days=40),
            done=True,
            expire_time=now - timedelta(days=1),
        )
        kept = claimed_job(
            session,
            lease_expire_time=now - timedelta(days=1),
            done=True,
            expire_time=now + timedelta(days=29),
        )

        for key, age in (("stale", timedelta(days=2)), ("fresh", timedelta(minutes=1))):
            session.add(
                IdempotencyKey(
                    principal="site_client:sc-1",
                    key=key,
                    endpoint="POST /data_resources",
                    request_hash="h",
                    created={},
                    created_at=now - age,
                )
            )

    busy = tick(operations_reaper, runtime)

    # The tick says what it did, naming the operation it ended.
    assert isinstance(busy, SkipReason)
    assert busy.skip_message == (
        "ended 1 lapsed lease, deleted 1 finished operation past expire_time, forgot 1 idempotency key past "
        f"retention: {lapsed.id}"
    )
    with clean_database.session() as session:
        # Keys are remembered for a day (NMDC_IDEMPOTENCY_RETENTION_SECONDS), then forgotten.
        assert session.scalars(sa.select(IdempotencyKey.key)).all() == ["fresh"]
        reaped = session.get(Operation, lapsed.id)
        assert reaped.state == "expired" and reaped.done
        assert reaped.error["code"] == "DEADLINE_EXCEEDED"
        assert session.get(Job, lapsed.job_id).status == "unclaimed"
        assert session.get(Operation, alive.id).state == "running"
        assert session.get(Operation, old.id) is None
        assert session.get(Operation, kept.id) is not None
        # Executions outlive their operations.
        assert session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 2
        # The tallies' changes were folded: what is left to sum is the few tallies themselves.
        assert session.scalar(sa.select(sa.func.count()).select_from(tally_changes)) == 0
        tallied = {counted: n for counted, n in pipeline_store.tallies(session).items() if n}
        assert tallied == {"jobs.unclaimed": 1, "jobs.claimed": 1, "jobs.succeeded": 2, "executions": 2}

    quiet = tick(operations_reaper, runtime)
    assert isinstance(quiet, SkipReason) and quiet.skip_message.startswith("idle: no lapsed lease")


def test_a_lapsed_cancel_request_ends_canceled_paused_or_not(runtime, clean_database, make_workflow, site):
    make_workflow("wf-1", ["metagenome"])
    now = datetime.now(UTC)
    with clean_database.session() as session:
        ops = {
            name: claimed_job(session, lease_expire_time=now - timedelta(minutes=1))
            for name in ("requested", "paused_requested", "paused", "requested_alive")
        }
        ops["requested_alive"].lease_expire_time = now + timedelta(minutes=5)
        for name, op in ops.items():
            op.cancel_requested = "requested" in name
            if name.startswith("paused"):
                op.state = "paused"
        session.get(Job, ops["paused_requested"].job_id).status = "canceled"

    assert tick(operations_reaper, runtime).skip_message.startswith("ended 2 lapsed leases,")

    with clean_database.session() as session:
        for name in ("requested", "paused_requested"):
            reaped = session.get(Operation, ops[name].id)
            assert (reaped.state, reaped.done, reaped.paused) == ("canceled", True, False)
            assert reaped.error["code"] == "CANCELLED"
            assert "lease lapsed after the cancel request" in reaped.error["message"]
        # The canceled attempt is given back; a canceled job stays canceled.
        requested = session.get(Job, ops["requested"].job_id)
        assert (requested.status, requested.attempts) == ("unclaimed", 0)
        assert session.get(Job, ops["paused_requested"].job_id).status == "canceled"
        assert session.get(Operation, ops["paused"].id).state == "paused"
        assert session.get(Operation, ops["requested_alive"].id).state == "running"


def test_the_reaper_ticks_every_10_seconds():
    assert operations_reaper.minimum_interval_seconds == 10


def test_database_outage_fails_the_tick(settings):
    with pytest.raises(sa.exc.OperationalError):
        tick(
            operations_reaper,
            unreachable(settings),
        )
