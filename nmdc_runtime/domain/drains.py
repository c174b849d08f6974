"""Drained sites: a site whose last claims failed at the site, one after another, takes no new jobs.

A misconfigured executing site (its data host refused by its own rules, a missing executable) claims a good job,
fails it, and claims the next: left alone, it uses up the attempts of every job it can claim. So each ending of
an operation is judged (`ending_kind`), and a site whose last `drain_after` judged endings in a row were each
its own fault is **drained** (`drain_of`) until staff or the site's admin lift it:

- **a fault** (counts): the lease lapsed without a cancel request (`expired`); the holder failed it with a code
  other than `DATA_LOSS` or `UNAVAILABLE`; or it released it saying the fault was its own (`SITE_FAULT`);
- **a success** (resets the count): the operation succeeded;
- **neither**: anything that ended after a cancel request (the admin's request, not the site, stopped it), a
  plain release or a `SHUTDOWN` (a graceful give-back), and a failure with `DATA_LOSS` or `UNAVAILABLE` (the
  data's or the data site's fault, not the executing site's).

Lifting the drain resets the count too: only operations that end after it count. A drained site's claims are
refused (`check_not_drained`, part of the claim decision) and its claimable listing is empty; its open
operations go on (heartbeats, executions, finishing), and one that succeeds resets the count like any other
success, which lifts the drain.

The database keeps the endings as they happen: a trigger on the operation's ending appends each fault and success
to `site_endings` (migration 0012), with `operation_ending_kind`, the SQL form of `ending_kind`, whichever path
ends it (the holder's PATCH, a lapse noticed anywhere, the reaper, a release, a cancel). A site's streak is its
faults since its last success or undrain (`fault_streak`; in SQL `store.rules.fault_streak`).
`tests/integration/test_rules_agree.py` proves the two forms of each agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from nmdc_runtime.domain.errors import SiteDrained
from nmdc_runtime.domain.states import ErrorCode, OperationState, ReleaseCode

DATA_FAULT_CODES = frozenset({ErrorCode.DATA_LOSS.value, ErrorCode.UNAVAILABLE.value})
"""Error codes that put a failure on the data or its data site, not on the executing site."""


class EndingKind(StrEnum):
    """What an operation's ending says about the site that held it (None: nothing)."""

    FAULT = "fault"
    """Counts toward draining the site."""
    SUCCESS = "success"
    """Resets the count."""
    UNDRAIN = "undrain"
    """Not an ending: staff or the site's admin lifted the drain, which resets the count as a success does."""


def ending_kind(*, state: str, cancel_requested: bool, error: Mapping[str, Any] | None) -> EndingKind | None:
    """What an operation that ended in `state` (with its `error`) says about its site (module docstring):
    FAULT, SUCCESS, or None for an ending that neither counts nor resets."""
    state = OperationState(state)
    if not state.done:
        raise ValueError(f"{state} is not a finished state")
    if cancel_requested:
        return None
    if state is OperationState.SUCCEEDED:
        return EndingKind.SUCCESS
    if state is OperationState.EXPIRED:
        return EndingKind.FAULT
    error = error or {}
    if state is OperationState.FAILED:
        return None if error.get("code") in DATA_FAULT_CODES else EndingKind.FAULT
    details = error.get("details")
    reason = details.get("reason") if isinstance(details, dict) else None
    if isinstance(reason, dict) and reason.get("code") == ReleaseCode.SITE_FAULT.value:
        return EndingKind.FAULT
    return None


@dataclass(frozen=True)
class Ending:
    """One judged ending of a site's operation (or an undrain, with no operation), in the order they came."""

    kind: EndingKind
    operation_id: str | None
    ended_at: datetime


def fault_streak(endings: Sequence[Ending]) -> list[Ending]:
    """The faults since the last success or undrain, oldest first (the SQL form is `store.rules.fault_streak`)."""
    streak: list[Ending] = []
    for ending in endings:
        if ending.kind is EndingKind.FAULT:
            streak.append(ending)
        else:
            streak.clear()
    return streak


@dataclass(frozen=True)
class Drain:
    """Why a site is drained: since when, and the operations whose faults drained it."""

    since: datetime
    operations: tuple[str, ...]


def drain_of(streak: Sequence[tuple[str, datetime]], *, drain_after: int) -> Drain | None:
    """The site's drain, or None: `streak` is its faults since its last success or undrain, oldest first, as
    (operation id, ended at), the first `drain_after` of them at least when there are that many. Drained once
    there are `drain_after`: since the last of those ended."""
    if len(streak) < drain_after:
        return None
    first = streak[:drain_after]
    return Drain(since=first[-1][1], operations=tuple(op_id for op_id, _ in first))


def check_not_drained(site_id: str, drain: Drain | None) -> None:
    """SiteDrained when the site is drained: it may claim no new job until the drain is lifted."""
    if drain is None:
        return
    since = drain.since.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise SiteDrained(
        f"site {site_id} is drained since {since}: its last {len(drain.operations)} "
        f"operations in a row failed at the site ({', '.join(drain.operations)}); it claims no new job until "
        f"staff or the site's admin lift the drain (POST /sites/{site_id}:undrain)"
    )
