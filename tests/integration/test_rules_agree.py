"""The rules written twice, in Python (`nmdc_runtime.domain`) and in SQL (`nmdc_runtime.store.rules`, and the
database function `operation_ending_kind` of migration 0013), agree on every case: the lapse rule and
claimability (as one predicate, and as the union the claimable listing runs, a drained site's included), and so
do the queries built from them (the claimable listing, the lease reaper's scan, the status figures) and the
claim itself (its two-statement path for unclaimed jobs, and the general path); what an ending says about its
site, a site's fault streak, which claims give access grants, and the cap on executions.

Every case is a row in a real database, and `now` is one fixed instant given to both forms, so a lease that
ends exactly at `now` is a case of its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nmdc_runtime.domain import drains as drains_rules
from nmdc_runtime.domain import executions as executions_rules
from nmdc_runtime.domain import grants as grants_rules
from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.drains import Ending, EndingKind
from nmdc_runtime.domain.errors import Conflict, Forbidden, SiteDrained
from nmdc_runtime.domain.states import JobStatus, OperationState
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Job, Operation, SiteEnding, Workflow
from nmdc_runtime.services.claims import claim_job
from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store import drains as drains_store
from nmdc_runtime.store import jobs as jobs_store
from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store import pipeline as pipeline_store
from nmdc_runtime.store.pages import PageParams
from nmdc_runtime.store.rules import (
    claim_grants_access,
    claimable_by,
    ending_kind,
    execution_room,
    fault_streak,
    lapsed_lease,
    site_drained,
)
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
    accounts_store.create_site(session, site_id="drained", name="X", capabilities=["gpu"])
    for n in range(POLICY.site_drain_after):
        session.add(SiteEnding(site_id="drained", fault=True, operation_id=f"op-{n}", ended_at=NOW))
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

    drain_after = POLICY.site_drain_after
    for site_id, capabilities, drained in (
        ("capable", ["gpu"], False),
        ("incapable", [], False),
        ("drained", ["gpu"], True),
    ):
        listed, _ = jobs_store.list_jobs(
            session,
            page=PageParams(size=len(cases) + 1),
            claimable_by_site=site_id,
            drain_after=drain_after,
            now=NOW,
        )
        expected = {
            job.id
            for job, op in cases
            if operations_rules.claimable(
                job,
                op,
                site_capabilities=capabilities,
                required_capabilities=required[job.workflow_id],
                site_drained=drained,
                now=NOW,
            )
        }
        assert {job.id for job in listed} == expected
        # The predicate form (`claimable_by`) and the union the listing runs (`claimable_jobs`) are two SQL
        # forms of one rule: both agree with Python.
        in_sql = sa.select(Job.id).where(claimable_by(site_id, NOW, drain_after))
        assert set(session.scalars(in_sql)) == expected
        assert bool(expected) is not drained, "some case must be claimable, or the comparison proves little"
        if site_id == "capable":
            claimable_ids = expected

    # The claim decides the same: the capable site gets a new operation exactly for the claimable jobs, the
    # drained one (as capable) for none, whatever the job.
    job_ids = [job.id for job, _ in cases]
    session.close()
    created = set()
    for job_id in job_ids:
        with clean_database.sessionmaker() as claim_session:
            with pytest.raises((SiteDrained, Conflict, Forbidden)) as refused:
                claim_job(claim_session, job_id=job_id, site_id="drained", policy=POLICY, now=NOW)
            if job_id in claimable_ids:
                assert isinstance(refused.value, SiteDrained)
        with clean_database.sessionmaker() as claim_session:
            try:
                claim = claim_job(claim_session, job_id=job_id, site_id="capable", policy=POLICY, now=NOW)
            except (Conflict, Forbidden):
                continue
            assert claim.created
            created.add(job_id)
    assert created == claimable_ids


def _release(code: str | None) -> dict:
    details = {} if code is None else {"reason": {"code": code, "message": "m"}}
    return {"code": "CANCELLED", "message": "released", "details": details}


ENDING_ERRORS = {
    OperationState.SUCCEEDED: [None],
    OperationState.EXPIRED: [{"code": "DEADLINE_EXCEEDED", "message": "m"}],
    OperationState.FAILED: [
        {"code": code, "message": "m", "details": details}
        for code in ("UNKNOWN", "DATA_LOSS", "UNAVAILABLE", "SITE_FAULT")
        for details in (None, {"reason": {"code": "SITE_FAULT"}}, [1])
    ],
    OperationState.CANCELED: [
        _release("SITE_FAULT"),
        _release("SHUTDOWN"),
        _release(None),
        {"code": "CANCELLED", "message": "m", "details": None},
        {"code": "CANCELLED", "message": "m", "details": ["reason"]},
        {"code": "CANCELLED", "message": "m", "details": {"reason": "SITE_FAULT"}},
        {"code": "CANCELLED", "message": "m", "details": {"reason": {"code": 1}}},
    ],
}


def test_what_an_ending_says_about_its_site_agrees_in_python_and_sql(world):
    session = world
    ops = []
    for (state, errors), cancel_requested in itertools.product(ENDING_ERRORS.items(), [False, True]):
        for error in errors:
            job = _job(session, "wf-any", JobStatus.UNCLAIMED, 1)
            op = _operation(session, job, OpCase(state, cancel_requested, "before"))
            # A succeeded one keeps the stand-in error `_operation` gives every finished case (its outcome is not
            # what is judged), stored as JSON.
            op.error = error if state is not OperationState.SUCCEEDED else op.error
            ops.append(op)
    session.flush()
    in_sql = dict(
        session.execute(sa.select(Operation.id, ending_kind()).where(Operation.id.in_([o.id for o in ops])))
        .tuples()
        .all()
    )
    expected = {
        op.id: drains_rules.ending_kind(state=op.state, cancel_requested=op.cancel_requested, error=op.error)
        for op in ops
    }
    assert in_sql == {op_id: kind and kind.value for op_id, kind in expected.items()}
    kinds = set(expected.values())
    assert kinds == {EndingKind.FAULT, EndingKind.SUCCESS, None}, "every kind must be among the cases"


STREAKS = [
    (),
    (EndingKind.FAULT,),
    (EndingKind.FAULT, EndingKind.FAULT, EndingKind.FAULT, EndingKind.FAULT),
    (EndingKind.FAULT, EndingKind.SUCCESS, EndingKind.FAULT, EndingKind.FAULT),
    (EndingKind.FAULT, EndingKind.FAULT, EndingKind.UNDRAIN),
    (EndingKind.FAULT, EndingKind.FAULT, EndingKind.UNDRAIN, EndingKind.FAULT),
    (EndingKind.SUCCESS, EndingKind.UNDRAIN, EndingKind.SUCCESS),
]


def test_a_sites_fault_streak_agrees_in_python_and_sql_and_so_does_its_drain(world):
    session = world
    histories = {}
    for n, kinds in enumerate(STREAKS):
        site_id = f"history-{n}"
        accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=[])
        histories[site_id] = [
            Ending(kind, None if kind is EndingKind.UNDRAIN else f"op-{n}-{i}", NOW + timedelta(seconds=i))
            for i, kind in enumerate(kinds)
        ]
        for ending in histories[site_id]:
            session.add(
                SiteEnding(
                    site_id=site_id,
                    fault=ending.kind is EndingKind.FAULT,
                    operation_id=ending.operation_id,
                    ended_at=ending.ended_at,
                )
            )
            session.flush()  # in order: the table's own sequence orders them
    for limit in (1, 2, 3, 10):
        streaks = drains_store.fault_streaks(session, site_ids=histories, drain_after=limit)
        for site_id, endings in histories.items():
            in_python = [(e.operation_id, e.ended_at) for e in drains_rules.fault_streak(endings)][:limit]
            assert streaks[site_id] == in_python, (site_id, limit)
            in_sql = session.scalar(sa.select(fault_streak(site_id, limit)))
            assert drains_store.streak_of(in_sql) == in_python
            drained = session.scalar(sa.select(site_drained(site_id, limit)))
            assert drained is (drains_rules.drain_of(in_python, drain_after=limit) is not None)
        drained_sites = drains_store.drained_sites(session, drain_after=limit)
        assert set(drained_sites) - {"drained"} == {
            site_id
            for site_id, endings in histories.items()
            if len(drains_rules.fault_streak(endings)) >= limit
        }


def test_which_claims_give_access_grants_agrees_in_python_and_sql(world):
    session = world
    ops = []
    for case in OPEN_CASES + DONE_CASES:
        job = _job(session, "wf-any", JobStatus.CLAIMED if not case.state.done else JobStatus.UNCLAIMED, 1)
        ops.append(_operation(session, job, case))
    session.flush()
    in_sql = dict(
        session.execute(
            sa.select(Operation.id, claim_grants_access(NOW)).where(Operation.id.in_([o.id for o in ops]))
        )
        .tuples()
        .all()
    )
    expected = {op.id: grants_rules.claim_grants_access(op, now=NOW) for op in ops}
    assert in_sql == expected
    assert set(expected.values()) == {True, False}


def test_the_cap_on_executions_agrees_in_python_and_sql(world):
    session = world
    job = _job(session, "wf-any", JobStatus.UNCLAIMED, 1)
    op = _operation(session, job, OpCase(OperationState.RUNNING, False, "after"))
    for count in range(4):
        op.execution_count = count
        session.flush()
        for cap in (1, 2, 3):
            in_sql = session.scalar(sa.select(execution_room(cap)).where(Operation.id == op.id))
            assert in_sql is executions_rules.has_room_for_execution(op, max_executions=cap), (count, cap)
