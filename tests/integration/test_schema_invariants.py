"""The database itself refuses states the runtime must never reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Job, Operation, Workflow
from nmdc_runtime.store import accounts as accounts_store


def _world(session):
    accounts_store.create_site(session, site_id="site-e", name="E", capabilities=["gpu"])
    accounts_store.create_site(session, site_id="site-d", name="D", capabilities=[])
    session.add(Workflow(id="wf", name="wf", version="1", data_types=["fastq"], required_capabilities=[]))
    session.flush()
    dr = DataResource(
        id=new_id("dr"), site_id="site-d", name="a", url="https://d.example/a", data_type="fastq", size=1
    )
    session.add(dr)
    session.flush()
    job = Job(id=new_id("job"), workflow_id="wf", max_attempts=3, trigger_data_resource_id=dr.id)
    session.add(job)
    session.flush()
    return dr, job


def _operation(job: Job, **values) -> Operation:
    fields = dict(
        id=new_id("op"),
        job_id=job.id,
        site_id="site-e",
        workflow_id=job.workflow_id,
        attempt=1,
        lease_expire_time=datetime.now(UTC) + timedelta(minutes=5),
        lease_seconds=300,
    )
    fields.update(values)
    return Operation(**fields)


def test_second_unfinished_operation_for_a_job_is_refused(session):
    _, job = _world(session)
    session.add(_operation(job))
    session.flush()
    session.add(_operation(job, attempt=2))
    with pytest.raises(IntegrityError, match="uq_operations_open_job"):
        session.flush()


def test_finished_operations_do_not_block_a_new_one(session):
    _, job = _world(session)
    session.add(
        _operation(job, state="expired", done=True, error={"code": "DEADLINE_EXCEEDED", "message": "lapsed"})
    )
    session.flush()
    session.add(_operation(job, attempt=2))
    session.flush()
    count = session.scalar(
        sa.select(sa.func.count()).select_from(Operation).where(Operation.job_id == job.id)
    )
    assert count == 2


def test_done_operation_needs_exactly_one_of_result_and_error(session):
    _, job = _world(session)
    session.add(_operation(job, state="failed", done=True))
    with pytest.raises(IntegrityError, match="done_has_result_or_error"):
        session.flush()


def test_done_flag_must_match_state(session):
    _, job = _world(session)
    session.add(_operation(job, state="running", done=True, error={"code": "UNKNOWN"}))
    with pytest.raises(IntegrityError, match="done_matches_state"):
        session.flush()


def test_unknown_statuses_are_refused(session):
    _, job = _world(session)
    session.execute(sa.update(Job).where(Job.id == job.id).values(status="claimed"))
    with pytest.raises(IntegrityError, match="status_valid"):
        session.execute(sa.update(Job).where(Job.id == job.id).values(status="lost"))


def test_one_sensor_job_per_workflow_and_data_resource(session):
    dr, _ = _world(session)
    session.add(Job(id=new_id("job"), workflow_id="wf", max_attempts=3, trigger_data_resource_id=dr.id))
    with pytest.raises(IntegrityError, match="uq_jobs_workflow_trigger"):
        session.flush()


def test_jobs_made_by_hand_may_share_inputs(session):
    _world(session)
    session.add(Job(id=new_id("job"), workflow_id="wf", max_attempts=3))
    session.add(Job(id=new_id("job"), workflow_id="wf", max_attempts=3))
    session.flush()


def test_foreign_keys_hold(session):
    session.add(Job(id=new_id("job"), workflow_id="no-such-workflow", max_attempts=3))
    with pytest.raises(IntegrityError, match="fk_jobs_workflow_id_workflows"):
        session.flush()


def test_negative_size_is_refused(session):
    accounts_store.create_site(session, site_id="site-d", name="D", capabilities=[])
    session.add(
        DataResource(id=new_id("dr"), site_id="site-d", name="a", url="https://x/a", data_type="t", size=-1)
    )
    with pytest.raises(IntegrityError, match="size_non_negative"):
        session.flush()
