"""The rules written twice, in Python (`nmdc_runtime.domain.operations`) and in SQL (`nmdc_runtime.store.rules`),
agree on every case: the lapse rule and claimability (as one predicate, and as the union the claimable listing
runs), and so do the queries built from them (the claimable listing, the lease reaper's scan, the status
figures) and the claim itself (its two-statement path for unclaimed jobs, and the general path).

Every case is a row in a real database, and `now` is one fixed instant given to both forms, so a lease that
ends exactly at `now` is a case of its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.errors import Conflict, Forbidden
from nmdc_runtime.domain.states import JobStatus, OperationState
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Job, Operation, Workflow
from nmdc_runtime.services.claims import claim_job
from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store import jobs as jobs_store
from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store import pipeline as pipeline_store
from nmdc_runtime.store.pages import PageParams
from nmdc_runtime.store.rules import claimable_by, lapsed_lease
from tests.integration.builders import SERVICE_POLICY

NOW = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
MAX_ATTEMPTS = 2
LEASE_ENDS = {"before": NOW - timedelta(seconds=1), "exactly": NOW, "after": NOW + timedelta(seconds=1)}
POLICY = SERVICE_POLICY


@dataclass(frozen=True)
class OpCase:
    state: OperationState
    cancel_requested: bool
    lease_ends: str


OPEN_CASES = [
    OpCase(state, cancel, ends)
    for state, cancel, ends in itertools.product(
        [OperationState.RUNNING, OperationState.PAUSED], [False, True], LEASE_ENDS
    )
]
# A finished operation never lapses, whatever its lease said.
DONE_CASES = [OpCase(OperationState.EXPIRED, cancel, ends) for cancel in (False, True) for ends in LEASE_ENDS]


@pytest.fixture
def world(session):
    accounts_store.create_site(session, site_id="site-d", name="D", capabilities=[])
    accounts_store.create_site(session, site_id="holder", name="H", capabilities=["gpu"])
    accounts_store.create_site(session, site_id="capable", name="C", capabilities=["gpu"])
    accounts_store.create_site(session, site_id="incapable", name="I", capabilities=[])
    session.add(Workflow(id="wf-gpu", name="g", version="1", data_types=[], required_capabilities=["gpu"]))
    session.add(Workflow(id="wf-any", name="a", version="1", data_types=[], required_capabilities=[]))
    session.flush()
    return session


def _job(session, workflow_id: str, status: JobStatus, attempts: int) -> Job:
    job = Job(workflow_id=workflow_id, status=status.value, attempts=attempts, max_attempts=MAX_ATTEMPTS)
    session.add(job)
    session.flush()
    return job


def _operation(session, job: Job, case: OpCase) -> Operation:
    done = case.state.done
    op = Operation(
        id=new_id("op"),
        job_id=job.id,
        site_id="holder",
        workflow_id=job.workflow_id,
        attempt=max(job.attempts, 1),
        state=case.state.value,
        done=done,
        cancel_requested=case.cancel_requested,
        lease_expire_time=LEASE_ENDS[case.lease_ends],
        lease_seconds=60,
    )
    if done:
        op.error = {"code": "DEADLINE_EXCEEDED", "message": "lapsed"}
    session.add(op)
    session.flush()
    return op


def test_the_lapse_rule_agrees_in_python_and_sql_and_in_the_queries_built_on_it(world):
    session = world
    ops = []
    for case in OPEN_CASES + DONE_CASES:
        job = _job(session, "wf-any", JobStatus.CLAIMED if not case.state.done else JobStatus.UNCLAIMED, 1)
        ops.append((case, _operation(session, job, case)))
    session.commit()

    in_sql = dict(
        session.execute(
            sa.select(Operation.id, lapsed_lease(NOW)).where(Operation.id.in_([o.id for _, o in ops]))
        )
        .tuples()
        .all()
    )
    expected = {op.id: operations_rules.lease_lapsed(op, now=NOW) for _, op in ops}
    assert in_sql == expected
    # The cases mean what the rule says, not only that the two forms agree.
    lapsed_cases = {case for case, op in ops if expected[op.id]}
    assert lapsed_cases == {
        case
        for case in OPEN_CASES
        if case.lease_ends != "after" and (case.state is OperationState.RUNNING or case.cancel_requested)
    }

    # The reaper's scan and the status figures count exactly those, paused ones with a cancel request and
    # leases ending exactly now included.
    reaped = {op_id for op_id, _ in operations_store.lapsed_operation_jobs(session, now=NOW, limit=1000)}
    assert reaped == {op_id for op_id, lapsed in expected.items() if lapsed}
    assert pipeline_store.runtime_status(session, now=NOW)["lapsed_leases"] == len(reaped)


def test_claimability_agrees_in_python_and_sql_and_with_the_claim_itself(world, clean_database):
    session = world
    cases = []
    for workflow_id, status, attempts in itertools.product(
        ["wf-gpu", "wf-any"], list(JobStatus), [1, MAX_ATTEMPTS]
    ):
        # A claimed job always has its open operation (a claim makes both in one transaction, and every
        # ending moves the job on); a job an admin canceled may still have one; others never do.
        op_cases = {JobStatus.CLAIMED: OPEN_CASES, JobStatus.CANCELED: [None, *OPEN_CASES]}.get(
            status, [None]
        )
        for op_case in op_cases:
            job = _job(session, workflow_id, status, attempts)
            op = _operation(session, job, op_case) if op_case else None
            cases.append((job, op))
    session.commit()
    required = {"wf-gpu": ["gpu"], "wf-any": []}

    for site_id, capabilities in (("capable", ["gpu"]), ("incapable", [])):
        listed, _ = jobs_store.list_jobs(
            session, page=PageParams(size=len(cases) + 1), claimable_by_site=site_id, now=NOW
        )
        expected = {
            job.id
            for job, op in cases
            if operations_rules.claimable(
                job,
                op,
                site_capabilities=capabilities,
                required_capabilities=required[job.workflow_id],
                now=NOW,
            )
        }
        assert {job.id for job in listed} == expected
        # The predicate form (`claimable_by`) and the union the listing runs (`claimable_jobs`) are two SQL
        # forms of one rule: both agree with Python.
        assert set(session.scalars(sa.select(Job.id).where(claimable_by(site_id, NOW)))) == expected
        assert expected, "some case must be claimable, or the comparison proves little"
        if site_id == "capable":
            claimable_ids = expected

    # The claim decides the same: the capable site gets a new operation exactly for the claimable jobs.
    job_ids = [job.id for job, _ in cases]
    session.close()
    created = set()
    for job_id in job_ids:
        with clean_database.sessionmaker() as claim_session:
            try:
                claim = claim_job(claim_session, job_id=job_id, site_id="capable", policy=POLICY, now=NOW)
            except (Conflict, Forbidden):
                continue
            assert claim.created
            created.add(job_id)
    assert created == claimable_ids
