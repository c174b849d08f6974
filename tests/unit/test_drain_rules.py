"""What each ending says about its site (`nmdc_runtime.domain.drains.ending_kind`), the fault streak, and when it
drains the site: every case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nmdc_runtime.domain import drains as drains_rules
from nmdc_runtime.domain import executions as executions_rules
from nmdc_runtime.domain.drains import Drain, Ending, EndingKind
from nmdc_runtime.domain.errors import Conflict, SiteDrained
from nmdc_runtime.domain.states import OperationState

S = OperationState
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
FAULT, SUCCESS = EndingKind.FAULT, EndingKind.SUCCESS


def _release(code: str | None) -> dict:
    details = {} if code is None else {"reason": {"code": code, "message": "m"}}
    return {"code": "CANCELLED", "message": "released by the holding site", "details": details}


ENDINGS = [
    # (state, error, without a cancel request, after one)
    (S.SUCCEEDED, None, SUCCESS, None),
    (S.EXPIRED, {"code": "DEADLINE_EXCEEDED", "message": "lapsed"}, FAULT, None),
    (S.FAILED, {"code": "UNKNOWN", "message": "m"}, FAULT, None),
    (S.FAILED, {"code": "INTERNAL", "message": "m", "details": [1, 2]}, FAULT, None),
    (S.FAILED, {"code": "DATA_LOSS", "message": "m"}, None, None),
    (S.FAILED, {"code": "UNAVAILABLE", "message": "m"}, None, None),
    (S.CANCELED, _release("SITE_FAULT"), FAULT, None),
    (S.CANCELED, _release("SHUTDOWN"), None, None),
    (S.CANCELED, _release(None), None, None),
    # The holder finishing with CANCELLED, with details of any shape.
    (S.CANCELED, {"code": "CANCELLED", "message": "m", "details": None}, None, None),
    (S.CANCELED, {"code": "CANCELLED", "message": "m", "details": ["SITE_FAULT"]}, None, None),
    (S.CANCELED, {"code": "CANCELLED", "message": "m", "details": {"reason": "SITE_FAULT"}}, None, None),
    (S.CANCELED, {"code": "CANCELLED", "message": "lapsed after the cancel request"}, None, None),
]


@pytest.mark.parametrize(("state", "error", "plain", "after_cancel"), ENDINGS)
def test_what_each_ending_says_about_its_site(state, error, plain, after_cancel):
    assert drains_rules.ending_kind(state=state, cancel_requested=False, error=error) is plain
    # Whatever ends after a cancel request was the admin's doing: it neither counts nor resets.
    assert drains_rules.ending_kind(state=state, cancel_requested=True, error=error) is after_cancel


@pytest.mark.parametrize("state", [S.RUNNING, S.PAUSED])
def test_an_open_operation_has_not_ended(state):
    with pytest.raises(ValueError):
        drains_rules.ending_kind(state=state, cancel_requested=False, error=None)


def _endings(*kinds: EndingKind) -> list[Ending]:
    return [
        Ending(kind, None if kind is EndingKind.UNDRAIN else f"op-{i}", NOW + timedelta(seconds=i))
        for i, kind in enumerate(kinds)
    ]


@pytest.mark.parametrize(
    ("kinds", "streak"),
    [
        ((), []),
        ((FAULT,), [0]),
        ((FAULT, FAULT, FAULT), [0, 1, 2]),
        ((FAULT, SUCCESS, FAULT), [2]),
        ((FAULT, FAULT, EndingKind.UNDRAIN), []),
        ((FAULT, FAULT, EndingKind.UNDRAIN, FAULT), [3]),
        ((SUCCESS, SUCCESS), []),
    ],
)
def test_the_streak_is_the_faults_since_the_last_success_or_undrain(kinds, streak):
    endings = _endings(*kinds)
    assert drains_rules.fault_streak(endings) == [endings[i] for i in streak]


def test_a_site_is_drained_once_its_streak_holds_drain_after_faults():
    streak = [(f"op-{i}", NOW + timedelta(seconds=i)) for i in range(4)]
    assert drains_rules.drain_of(streak[:2], drain_after=3) is None
    assert drains_rules.drain_of(streak[:3], drain_after=3) == Drain(
        since=NOW + timedelta(seconds=2), operations=("op-0", "op-1", "op-2")
    )
    # Faults past the drain do not move it: it began with the third.
    assert drains_rules.drain_of(streak, drain_after=3) == Drain(
        since=NOW + timedelta(seconds=2), operations=("op-0", "op-1", "op-2")
    )
    assert drains_rules.drain_of([], drain_after=1) is None
    assert drains_rules.drain_of(streak[:1], drain_after=1) == Drain(since=NOW, operations=("op-0",))


def test_a_drained_site_is_refused_with_a_conflict_that_says_why():
    drains_rules.check_not_drained("site-e", None)
    with pytest.raises(SiteDrained) as refused:
        drains_rules.check_not_drained("site-e", Drain(since=NOW, operations=("op-0", "op-1")))
    assert isinstance(refused.value, Conflict)
    assert refused.value.message.startswith("site site-e is drained since 2030-01-01T12:00:00Z")


class _Op:
    id = "op-1"

    def __init__(self, count: int) -> None:
        self.execution_count = count


@pytest.mark.parametrize(("count", "room"), [(0, True), (1, True), (2, False), (3, False)])
def test_one_claim_records_at_most_max_executions(count, room):
    assert executions_rules.has_room_for_execution(_Op(count), max_executions=2) is room
    if room:
        executions_rules.check_room_for_execution(_Op(count), max_executions=2)
    else:
        with pytest.raises(Conflict, match="NMDC_MAX_EXECUTIONS_PER_OPERATION=2"):
            executions_rules.check_room_for_execution(_Op(count), max_executions=2)
