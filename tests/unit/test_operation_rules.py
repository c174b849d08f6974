"""The pure rules of claims, leases and operations: every allowed and every refused move."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pytest

from nmdc_runtime.domain import drains as drains_rules
from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.caps import json_size
from nmdc_runtime.domain.errors import Conflict, Forbidden, InvalidInput, SiteDrained
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.domain.states import JobStatus, OperationState
from nmdc_runtime.models import Job, Operation

MAX_BYTES = 64 * 1024
_merged_metadata = functools.partial(operations_rules.merged_metadata, max_bytes=MAX_BYTES)
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
S = OperationState
J = JobStatus

ALLOWED_OPERATION_MOVES = {
    (S.RUNNING, S.PAUSED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELED),
    (S.RUNNING, S.EXPIRED),
    (S.PAUSED, S.RUNNING),
    (S.PAUSED, S.SUCCEEDED),
    (S.PAUSED, S.FAILED),
    (S.PAUSED, S.CANCELED),
}
ALLOWED_JOB_MOVES = {
    (J.UNCLAIMED, J.CLAIMED),
    (J.UNCLAIMED, J.CANCELED),
    (J.CLAIMED, J.UNCLAIMED),
    (J.CLAIMED, J.SUCCEEDED),
    (J.CLAIMED, J.FAILED),
    (J.CLAIMED, J.CANCELED),
}


@pytest.mark.parametrize("source", list(S))
@pytest.mark.parametrize("target", list(S))
def test_operation_moves(source, target):
    assert operations_rules.can_move_operation(source, target) == (
        (source, target) in ALLOWED_OPERATION_MOVES
    )


@pytest.mark.parametrize("source", list(J))
@pytest.mark.parametrize("target", list(J))
def test_job_moves(source, target):
    assert operations_rules.can_move_job(source, target) == ((source, target) in ALLOWED_JOB_MOVES)


def test_finished_operations_never_move_and_paused_ones_never_expire():
    for state in S:
        if state.done:
            assert not any(operations_rules.can_move_operation(state, target) for target in S)
    assert not operations_rules.can_move_operation(S.PAUSED, S.EXPIRED)


# --- claims --------------------------------------------------------------------------------------------


DRAIN = drains_rules.Drain(since=NOW, operations=("op-a", "op-b", "op-c"))


def _decide(job_status=J.UNCLAIMED, holder=None, site="site-e", caps=("gpu",), required=("gpu",), drain=None):
    return operations_rules.decide_claim(
        job_status=job_status,
        holder_site_id=holder,
        site_id=site,
        site_capabilities=list(caps),
        required_capabilities=list(required),
        site_drain=drain,
    )


def test_claim_of_an_unclaimed_job_creates_an_operation():
    assert _decide() is operations_rules.ClaimDecision.CREATED


def test_claim_of_a_job_marked_claimed_without_a_live_operation_creates_one():
    # A lapsed operation is expired before the decision, so no holder remains.
    assert _decide(job_status=J.CLAIMED, holder=None) is operations_rules.ClaimDecision.CREATED


def test_repeated_claim_by_the_holder_returns_the_same_operation():
    assert _decide(job_status=J.CLAIMED, holder="site-e") is operations_rules.ClaimDecision.EXISTING


def test_claim_while_another_site_holds_it_conflicts():
    with pytest.raises(Conflict):
        _decide(job_status=J.CLAIMED, holder="site-f")


@pytest.mark.parametrize("status", [J.SUCCEEDED, J.FAILED, J.CANCELED])
def test_claim_of_a_finished_or_canceled_job_conflicts(status):
    with pytest.raises(Conflict):
        _decide(job_status=status)
    with pytest.raises(Conflict):
        _decide(job_status=status, holder="site-e")


def test_claim_without_a_required_capability_is_forbidden_and_names_it():
    with pytest.raises(Forbidden, match="metagenome"):
        _decide(caps=["gpu"], required=["gpu", "metagenome"])


@pytest.mark.parametrize(
    ("job_status", "holder"), [(J.UNCLAIMED, None), (J.CLAIMED, None), (J.CLAIMED, "site-f")]
)
def test_a_drained_site_claims_nothing_new_and_is_told_why(job_status, holder):
    with pytest.raises(SiteDrained) as refused:
        _decide(job_status=job_status, holder=holder, drain=DRAIN)
    assert "site-e is drained since 2030-01-01T12:00:00Z" in refused.value.message
    assert "op-a, op-b, op-c" in refused.value.message
    assert "POST /sites/site-e:undrain" in refused.value.message


def test_a_drained_site_retrying_the_claim_it_holds_gets_it_again():
    # Its open operations go on.
    assert (
        _decide(job_status=J.CLAIMED, holder="site-e", drain=DRAIN) is operations_rules.ClaimDecision.EXISTING
    )


def test_the_claim_decision_drains_a_site_after_its_streak_of_faults():
    streak = [("op-a", NOW - timedelta(minutes=2)), ("op-b", NOW - timedelta(minutes=1)), ("op-c", NOW)]
    arguments = dict(
        holder_site_id=None,
        site_id="site-e",
        site_capabilities=[],
        required_capabilities=[],
        workflow_lease_seconds=None,
        requested_lease_seconds=None,
        default_lease_seconds=60,
        now=NOW,
    )
    assert operations_rules.claim(_job(), fault_streak=streak[:2], drain_after=3, **arguments) is not None
    with pytest.raises(SiteDrained, match="since 2030-01-01T12:00:00Z"):
        operations_rules.claim(_job(), fault_streak=streak, drain_after=3, **arguments)


def test_capabilities_cover():
    assert operations_rules.capabilities_cover([], [])
    assert operations_rules.capabilities_cover(["a", "b"], ["a"])
    assert not operations_rules.capabilities_cover(["a"], ["a", "b"])


# --- the job after its operation ends --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op_state", "attempts", "expected"),
    [
        (S.SUCCEEDED, 1, (J.SUCCEEDED, 1)),
        (S.FAILED, 1, (J.UNCLAIMED, 1)),
        (S.FAILED, 3, (J.FAILED, 3)),
        (S.EXPIRED, 2, (J.UNCLAIMED, 2)),
        (S.EXPIRED, 3, (J.FAILED, 3)),
        # A release or cancel gives the attempt back, even the last one.
        (S.CANCELED, 3, (J.UNCLAIMED, 2)),
        (S.CANCELED, 1, (J.UNCLAIMED, 0)),
    ],
)
def test_job_after_its_operation_ends(op_state, attempts, expected):
    got = operations_rules.job_after_operation(
        job_status=J.CLAIMED, attempts=attempts, max_attempts=3, op_state=op_state
    )
    assert got == expected


@pytest.mark.parametrize("op_state", [S.SUCCEEDED, S.FAILED, S.EXPIRED, S.CANCELED])
def test_a_canceled_job_stays_canceled_whatever_its_operation_ends_with(op_state):
    status, _ = operations_rules.job_after_operation(
        job_status=J.CANCELED, attempts=1, max_attempts=3, op_state=op_state
    )
    assert status is J.CANCELED


@pytest.mark.parametrize("op_state", [S.RUNNING, S.PAUSED])
def test_an_open_state_is_not_an_ending(op_state):
    with pytest.raises(ValueError):
        operations_rules.job_after_operation(
            job_status=J.CLAIMED, attempts=1, max_attempts=3, op_state=op_state
        )


def test_error_codes_map_to_states():
    assert operations_rules.state_for_error("CANCELLED") is S.CANCELED
    assert operations_rules.state_for_error("INTERNAL") is S.FAILED
    assert operations_rules.state_for_error("DEADLINE_EXCEEDED") is S.FAILED


# --- leases, starting and finishing (ORM objects in memory, no database) -------------------------------


def _job(**values) -> Job:
    fields = dict(id="job-1", workflow_id="wf", status=J.UNCLAIMED.value, attempts=0, max_attempts=3)
    fields.update(values)
    return Job(**fields)


def _claimed(job: Job | None = None, lease_seconds: int = 60) -> tuple[Operation, Job]:
    job = job or _job()
    op = Operation(
        id="op-1",
        **operations_rules.start_operation(job, site_id="site-e", now=NOW, lease_seconds=lease_seconds),
    )
    return op, job


def test_start_counts_the_attempt_and_claims_the_job():
    op, job = _claimed(_job(attempts=1))
    assert job.status == J.CLAIMED
    assert job.attempts == 2
    assert op.attempt == 2
    assert (op.state, op.done, op.paused, op.cancel_requested) == (S.RUNNING, False, False, False)
    assert op.lease_expire_time == NOW + timedelta(seconds=60)
    assert (op.job_id, op.site_id, op.workflow_id) == ("job-1", "site-e", "wf")


@pytest.mark.parametrize("status", [J.CLAIMED, J.SUCCEEDED, J.FAILED, J.CANCELED])
def test_start_is_refused_unless_the_job_is_unclaimed_or_claimed(status):
    job = _job(status=status.value)
    if status is J.CLAIMED:
        # Re-claiming a job whose previous operation lapsed: it stays claimed.
        operations_rules.start_operation(job, site_id="site-e", now=NOW, lease_seconds=60)
        assert job.status == J.CLAIMED
    else:
        with pytest.raises(Conflict):
            operations_rules.start_operation(job, site_id="site-e", now=NOW, lease_seconds=60)


def test_lease_lapses_at_its_end_unless_paused_or_done():
    op, _ = _claimed(lease_seconds=10)
    assert not operations_rules.lease_lapsed(op, now=NOW + timedelta(seconds=9))
    assert operations_rules.lease_lapsed(op, now=NOW + timedelta(seconds=10))
    op.state = S.PAUSED.value
    assert op.paused
    assert not operations_rules.lease_lapsed(op, now=NOW + timedelta(days=1))
    op.state = S.RUNNING.value
    op.done = True
    assert not operations_rules.lease_lapsed(op, now=NOW + timedelta(days=1))


def test_a_cancel_request_makes_even_a_paused_lease_lapse():
    op, _ = _claimed(lease_seconds=10)
    op.cancel_requested = True
    assert not operations_rules.lease_lapsed(op, now=NOW + timedelta(seconds=9))
    assert operations_rules.lease_lapsed(op, now=NOW + timedelta(seconds=10))
    op.state = S.PAUSED.value
    assert not operations_rules.lease_lapsed(op, now=NOW + timedelta(seconds=9))
    assert operations_rules.lease_lapsed(op, now=NOW + timedelta(seconds=10))
    op.done = True
    assert not operations_rules.lease_lapsed(op, now=NOW + timedelta(days=1))


def test_a_lapse_without_a_cancel_request_expires():
    op, job = _claimed()
    ended = operations_rules.end_lapsed_operation(
        op, job, now=NOW + timedelta(minutes=5), retention_seconds=0
    )
    assert ended is S.EXPIRED
    assert (op.state, op.error["code"]) == (S.EXPIRED, "DEADLINE_EXCEEDED")
    assert (job.status, job.attempts) == (J.UNCLAIMED, 1)


@pytest.mark.parametrize("paused", [False, True])
def test_a_lapsed_cancel_request_ends_canceled_and_gives_the_attempt_back(paused):
    op, job = _claimed(_job(attempts=2))
    op.cancel_requested = True
    if paused:
        op.state = S.PAUSED.value
    later = NOW + timedelta(minutes=5)
    ended = operations_rules.end_lapsed_operation(op, job, now=later, retention_seconds=100)
    assert ended is S.CANCELED
    assert (op.state, op.done, op.paused, op.result_execution_id) == (S.CANCELED, True, False, None)
    assert op.error["code"] == "CANCELLED"
    assert "lease lapsed after the cancel request" in op.error["message"]
    assert op.error["details"] == {"lease_expire_time": "2030-01-01T12:01:00Z"}
    assert op.expire_time == later + timedelta(seconds=100)
    # Not a failed attempt, even on the last one: the job is offered again.
    assert (job.status, job.attempts) == (J.UNCLAIMED, 2)


def test_a_cancel_request_cuts_the_lease_to_the_grace_and_heartbeats_no_longer_renew_it():
    op, job = _claimed(lease_seconds=300)
    operations_rules.request_cancel(op, job, now=NOW, retention_seconds=0, grace_seconds=60, reason="r")
    assert (op.cancel_requested, op.done) == (True, False)
    assert op.lease_expire_time == NOW + timedelta(seconds=60)
    # The holder's heartbeats, and a resume, leave it where the grace ends.
    operations_rules.heartbeat(op, now=NOW + timedelta(seconds=30), by_holder=True)
    assert op.lease_expire_time == NOW + timedelta(seconds=60)
    operations_rules.pause(op, now=NOW + timedelta(seconds=31))
    operations_rules.resume(op, now=NOW + timedelta(seconds=32))
    assert op.lease_expire_time == NOW + timedelta(seconds=60)
    # A second request moves nothing later.
    operations_rules.request_cancel(
        op, job, now=NOW + timedelta(seconds=40), retention_seconds=0, grace_seconds=60, reason="r"
    )
    assert op.lease_expire_time == NOW + timedelta(seconds=60)
    assert operations_rules.lease_lapsed(op, now=NOW + timedelta(seconds=60))


def test_a_cancel_request_never_lengthens_a_lease_shorter_than_the_grace():
    op, job = _claimed(lease_seconds=10)
    operations_rules.request_cancel(op, job, now=NOW, retention_seconds=0, grace_seconds=60, reason="r")
    assert op.lease_expire_time == NOW + timedelta(seconds=10)


def test_without_a_cancel_request_heartbeats_and_resumes_renew_the_lease():
    op, _ = _claimed(lease_seconds=300)
    operations_rules.heartbeat(op, now=NOW + timedelta(seconds=30), by_holder=True)
    assert op.lease_expire_time == NOW + timedelta(seconds=330)
    operations_rules.heartbeat(op, now=NOW + timedelta(seconds=40), by_holder=False)  # an admin's
    assert op.lease_expire_time == NOW + timedelta(seconds=330)
    operations_rules.pause(op, now=NOW + timedelta(seconds=50))
    operations_rules.resume(op, now=NOW + timedelta(seconds=60))
    assert op.lease_expire_time == NOW + timedelta(seconds=360)


def test_a_cancel_request_on_a_lapsed_lease_ends_the_operation_at_once():
    op, job = _claimed(lease_seconds=10)
    operations_rules.request_cancel(
        op, job, now=NOW + timedelta(seconds=10), retention_seconds=0, grace_seconds=60, reason="r"
    )
    assert (op.state, op.error["code"]) == (S.CANCELED, "CANCELLED")


def test_an_admin_canceling_the_job_cuts_its_operations_lease_to_the_grace():
    op, job = _claimed(lease_seconds=300)
    operations_rules.cancel_job(job, op, now=NOW, retention_seconds=0, grace_seconds=5)
    assert (job.status, op.cancel_requested) == (J.CANCELED, True)
    assert op.lease_expire_time == NOW + timedelta(seconds=5)


def test_a_lapsed_cancel_request_leaves_a_canceled_job_canceled():
    op, job = _claimed()
    op.cancel_requested = True
    job.status = J.CANCELED.value
    assert (
        operations_rules.end_lapsed_operation(op, job, now=NOW + timedelta(minutes=5), retention_seconds=0)
        is S.CANCELED
    )
    assert (job.status, job.attempts) == (J.CANCELED, 0)


@pytest.mark.parametrize(
    ("reason", "message", "details"),
    [
        (None, "released by the holding site", {}),
        (
            {"code": "SITE_FAULT", "message": "no space left"},
            "released by the holding site (SITE_FAULT)",
            {"reason": {"code": "SITE_FAULT", "message": "no space left"}},
        ),
        (
            {"code": "SHUTDOWN"},
            "released by the holding site (SHUTDOWN)",
            {"reason": {"code": "SHUTDOWN", "message": ""}},
        ),
    ],
    ids=["no-reason", "site-fault", "shutdown"],
)
def test_a_release_ends_canceled_gives_the_attempt_back_and_keeps_its_reason(reason, message, details):
    op, job = _claimed(_job(attempts=2))  # the last attempt: a release still gives it back
    operations_rules.release(op, job, now=NOW, retention_seconds=0, reason=reason)
    assert (op.state, op.done) == (S.CANCELED, True)
    assert op.error == {"code": "CANCELLED", "message": message, "details": details}
    assert (job.status, job.attempts) == (J.UNCLAIMED, 2)


def test_a_release_reason_must_be_a_known_code():
    op, job = _claimed()
    with pytest.raises(ValueError):
        operations_rules.release(
            op, job, now=NOW, retention_seconds=0, reason={"code": "BORED", "message": ""}
        )
    assert not op.done


def test_expiry_sets_deadline_exceeded_and_retention_and_frees_the_job():
    op, job = _claimed()
    later = NOW + timedelta(minutes=5)
    operations_rules.expire_operation(op, job, now=later, retention_seconds=100)
    assert (op.state, op.done) == (S.EXPIRED, True)
    assert op.error["code"] == "DEADLINE_EXCEEDED"
    assert op.result_execution_id is None
    assert op.expire_time == later + timedelta(seconds=100)
    assert (job.status, job.attempts) == (J.UNCLAIMED, 1)


def test_expiry_of_the_last_attempt_fails_the_job():
    op, job = _claimed(_job(attempts=2))
    operations_rules.expire_operation(op, job, now=NOW, retention_seconds=0)
    assert (job.status, job.attempts) == (J.FAILED, 3)


def test_a_finished_operation_cannot_be_finished_again():
    op, job = _claimed()
    operations_rules.finish_operation(
        op, job, state=S.SUCCEEDED, now=NOW, retention_seconds=0, execution_id="exec-1"
    )
    assert (op.state, job.status) == (S.SUCCEEDED, J.SUCCEEDED)
    for state in (S.FAILED, S.EXPIRED, S.CANCELED):
        with pytest.raises(Conflict):
            operations_rules.finish_operation(
                op, job, state=state, now=NOW, retention_seconds=0, error={"code": "X"}
            )


def test_finishing_needs_exactly_one_outcome_matching_the_state():
    op, job = _claimed()
    with pytest.raises(ValueError):
        operations_rules.finish_operation(op, job, state=S.FAILED, now=NOW, retention_seconds=0)
    with pytest.raises(ValueError):
        operations_rules.finish_operation(
            op, job, state=S.FAILED, now=NOW, retention_seconds=0, execution_id="e", error={"code": "X"}
        )
    with pytest.raises(ValueError):
        operations_rules.finish_operation(
            op, job, state=S.FAILED, now=NOW, retention_seconds=0, execution_id="e"
        )
    with pytest.raises(ValueError):
        operations_rules.finish_operation(
            op, job, state=S.SUCCEEDED, now=NOW, retention_seconds=0, error={"code": "X"}
        )


# --- metadata --------------------------------------------------------------------------------------------


def test_metadata_merge_keeps_read_only_keys_and_ignores_server_keys():
    op, _ = _claimed()
    op.extra_metadata = {"progress": 10, "stage": "download"}
    merged = _merged_metadata(
        op,
        {
            "job_id": "job-1",
            "site_id": "site-e",
            "workflow_id": "wf",
            "attempt": 1,
            "state": "succeeded",
            "lease_expire_time": "2000-01-01T00:00:00Z",
            "cancel_requested": True,
            "paused": True,
            "progress": 50,
            "stage": None,
            "host": "node-7",
        },
    )
    assert merged == {"progress": 50, "host": "node-7"}


@pytest.mark.parametrize(
    ("key", "value"), [("job_id", "job-2"), ("site_id", "site-f"), ("workflow_id", "other"), ("attempt", 2)]
)
def test_changing_a_read_only_metadata_key_is_invalid(key, value):
    op, _ = _claimed()
    with pytest.raises(InvalidInput) as caught:
        _merged_metadata(op, {key: value})
    assert caught.value.details["field"] == f"metadata.{key}"


@pytest.mark.parametrize("progress", [-1, 101, "half", True, [1]])
def test_progress_must_be_a_percentage(progress):
    op, _ = _claimed()
    with pytest.raises(InvalidInput):
        _merged_metadata(op, {"progress": progress})


def test_message_must_be_a_string():
    op, _ = _claimed()
    with pytest.raises(InvalidInput):
        _merged_metadata(op, {"message": 5})
    assert _merged_metadata(op, {"message": "ok", "progress": 99.5}) == {
        "message": "ok",
        "progress": 99.5,
    }


def test_metadata_is_capped_in_keys():
    op, _ = _claimed()
    op.extra_metadata = {f"k{i}": i for i in range(operations_rules.MAX_METADATA_KEYS - 1)}
    assert len(_merged_metadata(op, {"last": 1})) == operations_rules.MAX_METADATA_KEYS
    with pytest.raises(InvalidInput) as caught:
        _merged_metadata(op, {"one": 1, "two": 2})
    assert caught.value.details["field"] == "metadata"
    assert str(operations_rules.MAX_METADATA_KEYS) in str(caught.value)


def test_metadata_is_capped_in_bytes_as_compact_json():
    op, _ = _claimed()
    # {"a":"..."} is 8 bytes around the value; a non-ASCII character counts as its UTF-8 bytes.
    fits = "x" * (MAX_BYTES - 8 - 2) + "é"
    assert json_size({"a": fits}) == MAX_BYTES
    assert _merged_metadata(op, {"a": fits}) == {"a": fits}
    with pytest.raises(InvalidInput) as caught:
        _merged_metadata(op, {"a": fits + "x"})
    assert caught.value.details["field"] == "metadata"
    # The cap is on the merge, not on one PATCH: many small additions cannot pass it either.
    op.extra_metadata = {"a": "x" * (MAX_BYTES // 2)}
    with pytest.raises(InvalidInput):
        _merged_metadata(op, {"b": "y" * (MAX_BYTES // 2)})


def test_metadata_stored_over_a_cap_may_stay_or_shrink_but_not_grow():
    op, _ = _claimed()
    big = {f"k{i}": "v" * 1000 for i in range(operations_rules.MAX_METADATA_KEYS + 10)}
    op.extra_metadata = dict(big)
    assert _merged_metadata(op, {}) == big
    assert _merged_metadata(op, dict(big)) == big
    assert len(_merged_metadata(op, {"k0": None, "k1": "short"})) == len(big) - 1
    with pytest.raises(InvalidInput):
        _merged_metadata(op, {"new": 1})
    with pytest.raises(InvalidInput):
        _merged_metadata(op, {"k0": "v" * 1001})


# --- who may act ----------------------------------------------------------------------------------------


def test_authorize_holder():
    op, _ = _claimed()
    holder = Principal(kind="site_client", name="c1", site_id="site-e")
    other = Principal(kind="site_client", name="c2", site_id="site-f")
    admin = Principal(kind="user", name="root", admin=True)
    user = Principal(kind="user", name="bob", site_admin_of=frozenset({"site-e"}))
    operations_rules.authorize_holder(op, holder, admin_allowed=True)
    operations_rules.authorize_holder(op, holder, admin_allowed=False)
    operations_rules.authorize_holder(op, admin, admin_allowed=True)
    for principal, admin_allowed in [(other, True), (user, True), (admin, False), (user, False)]:
        with pytest.raises(Forbidden):
            operations_rules.authorize_holder(op, principal, admin_allowed=admin_allowed)
