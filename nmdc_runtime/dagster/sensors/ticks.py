"""What every sensor's tick shares: its label, cursors read by a number the database hands out (with the gaps
they still await), the text that says what a tick did, and the events recorded when a tick fails after it
committed some work."""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (context, resources)
# as real types when the definitions are built.

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from dagster import (
    AssetCheckEvaluation,
    AssetMaterialization,
    AssetObservation,
    AssetSelection,
    DagsterInvariantViolationError,
    DefaultSensorStatus,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from nmdc_runtime.dagster.resources import RuntimeDatabase

SAMPLE_SIZE = 20
"""Ids named in one event's metadata; past this, counts and the first ids only."""
SUMMARY_PARTS = 5
"""Workflows (or states, or ids) a tick's text names one by one; past this, how many more."""
FEED_ROWS_PER_TICK = 500
"""Each execution (or ended operation) is one event in Dagster's log: bound what one tick writes."""
GAP_WINDOW = 1000
"""How far below the highest reported seq a not-yet-visible seq is still awaited."""

AssetEvent = AssetMaterialization | AssetObservation | AssetCheckEvaluation
Row = TypeVar("Row")


def runtime_sensor(
    name: str, *, every: int, description: str, shows: AssetSelection
) -> Callable[[Callable[..., Any]], SensorDefinition]:
    """The decorator of the runtime's sensors: running from the start (nobody has to switch one on in the UI),
    ticking at most every `every` seconds, with the description the UI shows and the assets whose events show
    what its ticks did (`shows`: the sensor's page links them as its "Target"; it requests no run of them)."""
    return sensor(
        name=name,
        minimum_interval_seconds=every,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
        asset_selection=shows,
    )


def tick_label(context: SensorEvaluationContext, sensor_name: str) -> str:
    """Who made something, for `Job.created_by`: `dagster:sensor:<name>:tick:<tick id>`.

    Under the daemon the tick id is the last part of the context's log key (`[repository, sensor,
    tick id]`); a sensor evaluated elsewhere (a test, `dagster sensor preview`) has none and is named by its
    cursor instead.
    """
    key = context.log_key
    if key and len(key) == 3 and str(key[-1]).isdigit():
        return f"dagster:sensor:{sensor_name}:tick:{key[-1]}"
    return f"dagster:sensor:{sensor_name}:cursor:{context.cursor or ''}"


def read_cursor(raw: str | None) -> dict[str, Any]:
    """A cursor's JSON object; `{}` for none or for anything else: a cursor edited by hand in the UI may be
    anything, and correctness never depends on it, so a tick starts afresh."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if isinstance(value, int):
        return {"seq": value}
    return value if isinstance(value, dict) else {}


def count(n: int, noun: str) -> str:
    """`1 job`, `3 jobs`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def first(ids: list[str]) -> str:
    """The first few ids, and `...` when there are more."""
    return ", ".join(ids[:SUMMARY_PARTS]) + (" ..." if len(ids) > SUMMARY_PARTS else "")


def tally(values: Iterable[str]) -> str:
    """`1 failed, 2 succeeded`."""
    return ", ".join(f"{n} {value}" for value, n in sorted(Counter(values).items()))


def sample(values: list[str]) -> MetadataValue:
    """The first `SAMPLE_SIZE` ids, as one metadata entry."""
    return MetadataValue.json(values[:SAMPLE_SIZE])


def report_committed(context: SensorEvaluationContext, events: list[AssetEvent]) -> None:
    """Record the events of work a failing tick committed before its error: they are real, though the tick
    fails."""
    if not events:
        return
    try:
        instance = context.instance
    except DagsterInvariantViolationError:
        return  # evaluated without an instance (a test): nowhere to record them
    for event in events:
        instance.report_runless_asset_event(event)


def next_seq_cursor(high: int, gaps: Iterable[int], seen: Iterable[int]) -> tuple[int, list[int]]:
    """A feed's cursor after a tick that saw the seqs `seen`: (highest seq seen, seqs still awaited).

    A seq below the highest seen but not seen yet is a gap: a write that has not committed (sequence values
    commit out of order) or one that rolled back. Gaps are looked up again on later ticks, so a late commit is
    reported once it is visible; a gap more than `GAP_WINDOW` below the highest seq is given up as rolled back.
    """
    seen = set(seen)
    new_high = max([high, *seen])
    waiting = {g for g in gaps if g not in seen}
    waiting.update(s for s in range(max(high + 1, new_high - GAP_WINDOW + 1), new_high) if s not in seen)
    return new_high, sorted(g for g in waiting if g > new_high - GAP_WINDOW)


@dataclass(frozen=True)
class FeedCursor:
    """A feed's cursor: the highest seq reported, the lower seqs still awaited, and whether the feed's check
    passed at its last evaluation (None: not known, as after a reset; see `nmdc_runtime.dagster.outcomes`)."""

    seq: int = 0
    gaps: tuple[int, ...] = ()
    passing: bool | None = None

    @classmethod
    def read(cls, raw: str | None) -> "FeedCursor":
        cursor = read_cursor(raw)
        passing = cursor.get("passing")
        return cls(
            int(cursor.get("seq", 0)),
            tuple(int(g) for g in cursor.get("gaps", [])),
            passing if isinstance(passing, bool) else None,
        )

    def dump(self) -> str:
        state: dict[str, Any] = {"seq": self.seq}
        if self.gaps:
            state["gaps"] = list(self.gaps)
        if self.passing is not None:
            state["passing"] = self.passing
        return json.dumps(state)


def report_feed(
    context: SensorEvaluationContext,
    runtime: RuntimeDatabase,
    *,
    fetch: Callable[..., list[Row]],
    seq: Callable[[Row], int],
    report: Callable[[list[Row], bool | None], tuple[list[AssetEvent], bool | None]],
    idle: str,
    summarize: Callable[[list[Row]], str],
) -> SkipReason | SensorResult:
    """One tick of a feed read by a number the database hands out (`seq`, `end_seq`): the rows above the
    cursor and the gaps it awaits become the asset events `report` makes of them, given and giving whether the
    feed's check passes."""
    cursor = FeedCursor.read(context.cursor)
    with runtime.session() as session:
        rows = fetch(session, after_seq=cursor.seq, also_seqs=cursor.gaps, limit=FEED_ROWS_PER_TICK)
    high, gaps = next_seq_cursor(cursor.seq, cursor.gaps, (seq(row) for row in rows))
    if not rows:
        awaiting = f"; awaiting {len(gaps)} uncommitted seq(s)" if gaps else ""
        return SkipReason(f"idle: {idle} (last seq reported: {cursor.seq}{awaiting})")
    events, passing = report(rows, cursor.passing)
    summary = summarize(rows)
    context.log.info(f"{summary}; last seq {high}")
    return SensorResult(
        asset_events=events,
        cursor=FeedCursor(high, tuple(gaps), passing).dump(),
        skip_reason=summary,
    )
