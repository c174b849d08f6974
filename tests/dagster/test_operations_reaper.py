"""The reaper applies the API's lease and retention rules on a clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dagster import SkipReason

from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors import operations_reaper
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Execution, IdempotencyKey, Job, Operation
from tests.dagster.conftest import tick


def _claimed_job(session, *, lease_expire_time: datetime, done: bool = False, expire_time=None) -> Operation:
    job = Job(
        id=new_id("job"),
        workflow_id="wf-1",
        config={},
        max_attempts=3,
        status="succeeded" if done else "claimed",
        attempts=1,
    )
    session.add(job)
    session.flush()
    op = Operation(
        id=new_id("op"),
        job_id=job.id,
        site_id="site-d",
        workflow_id="wf-1",
        attempt=1,
        state="succeeded" if done else "running",
        done=done,
        lease_expire_time=lease_expire_time,
        lease_seconds=60,
        expire_time=expire_time,
    )
    if done:
        execution = Execution(
            id=new_id("exec"),
            job_id=job.id,
            site_id="site-d",
            operation_id=op.id,
            workflow_id="wf-1",
            status="succeeded",
            started_at=lease_expire_time - timedelta(hours=1),
            ended_at=lease_expire_time,
        )
        session.add(execution)
        session.flush()
        op.result_execution_id = execution.id
    session.add(op)
    session.flush()
    return op


def test_lapsed_leases_expire_and_old_finished_operations_go(runtime, clean_database, make_workflow, site):
    make_workflow("wf-1", ["metagenome"])
    now = datetime.now(UTC)
    with clean_database.session() as session:
        lapsed = _claimed_job(session, lease_expire_time=now - timedelta(minutes=1))
        alive = _claimed_job(session, lease_expire_time=now + timedelta(minutes=5))
        old = _claimed_job(
            session,
            lease_expire_time=now - timedelta(days=40),
            done=True,
            expire_time=now - timedelta(days=1),
        )
        kept = _claimed_job(
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
                    status_code=201,
                    response={},
                    created_at=now - age,
                )
            )

    assert tick(operations_reaper, runtime) is None

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

    quiet = tick(operations_reaper, runtime)
    assert isinstance(quiet, SkipReason) and "0 lapsed leases ended" in quiet.skip_message


def test_a_lapsed_cancel_request_ends_canceled_paused_or_not(runtime, clean_database, make_workflow, site):
    make_workflow("wf-1", ["metagenome"])
    now = datetime.now(UTC)
    with clean_database.session() as session:
        ops = {
            name: _claimed_job(session, lease_expire_time=now - timedelta(minutes=1))
            for name in ("requested", "paused_requested", "paused", "requested_alive")
        }
        ops["requested_alive"].lease_expire_time = now + timedelta(minutes=5)
        for name, op in ops.items():
            op.cancel_requested = "requested" in name
            if name.startswith("paused"):
                op.state = "paused"
        session.get(Job, ops["paused_requested"].job_id).status = "canceled"

    assert tick(operations_reaper, runtime) is None

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
            RuntimeDatabase.from_settings(settings, url="postgresql+psycopg2://nmdc@127.0.0.1:9/nmdc"),
        )
