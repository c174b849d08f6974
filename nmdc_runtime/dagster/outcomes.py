"""How executions and ended operations show in the Dagster UI: successes as events of their asset, failures as
failing asset checks that name them.

A materialization says "this data was made" and shows green; an observation shows green too. So only what went
well is recorded as one: a succeeded execution is a materialization of `executions`, an operation that ended
succeeded or canceled an observation of `operations`. A failed execution, and an operation that failed or
expired, is a failing evaluation of a check instead (`execution_succeeded`, `operation_succeeded`), red on the
asset's Checks tab and in the catalog, whose metadata names it (`execution_id`, `operation_id`, `job_id`, ...);
it is recorded nowhere else, so no materialization of `executions` ever names a failed execution. The
operation after which its job failed for good says "JOB FAILED" first, with the execution its site recorded.

Each check passes again when a later execution (operation) succeeds. One passing evaluation is recorded at that
moment, not one per success: the sensors keep in their cursor whether the check's last evaluation passed, so the
check's execution history is the list of failures and recoveries. "Execute" on either check evaluates the last
one reported, in a run.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (resources) as real types.

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSpec,
    AssetMaterialization,
    AssetObservation,
    MetadataValue,
    ResourceParam,
    multi_asset_check,
)

from nmdc_runtime.dagster.assets import EXECUTIONS, OPERATIONS
from nmdc_runtime.dagster.checks import Finding
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.domain.states import ExecutionStatus, OperationState
from nmdc_runtime.store import pipeline as pipeline_store

ERROR_TEXT_CHARS = 500
"""The longest error code or message of an operation shown in Dagster: sites write them."""

EXECUTION_SUCCEEDED = AssetCheckSpec(
    "execution_succeeded",
    asset=EXECUTIONS,
    description=(
        "Fails for each execution a site reports as failed, naming it (execution_id, job_id, site_id, "
        "operation_id, api_path in the metadata); passes again once a later execution succeeds. Its execution "
        "history lists every failed execution; failed executions are recorded nowhere else. Read the execution "
        "(GET api_path) and ask the site for its logs; whether the job is tried again is on the operations "
        "asset (operation_succeeded)."
    ),
)
OPERATION_SUCCEEDED = AssetCheckSpec(
    "operation_succeeded",
    asset=OPERATIONS,
    description=(
        "Fails for each operation that ends failed or expired, naming it, its job, site, error and the execution "
        "its site recorded; passes again once a later operation succeeds (canceled ones do not count). A "
        "failure whose description starts with 'JOB FAILED' ended its job's last attempt: nobody will run the "
        "job again; fix the cause, then make the job again (POST /jobs with its workflow and data resources). "
        "EXPIRED (DEADLINE_EXCEEDED): the site stopped heartbeating; ask its staff whether it still runs."
    ),
)

Row = TypeVar("Row")
AssetEvent = AssetMaterialization | AssetObservation


def _execution_metadata(row: pipeline_store.ExecutionRow) -> dict[str, Any]:
    return {
        "execution_id": row.id,
        "api_path": f"/jobs/{row.job_id}/executions/{row.id}",
        "job_id": row.job_id,
        "workflow_id": row.workflow_id,
        "site_id": row.site_id,
        "operation_id": row.operation_id,
        "status": row.status,
        "started_at": row.started_at.isoformat(),
        "ended_at": row.ended_at.isoformat(),
        "outputs": MetadataValue.json(row.output_ids),
        "output_count": len(row.output_ids),
        "seq": row.seq,
    }


def _execution_text(row: pipeline_store.ExecutionRow) -> str:
    return f"execution {row.id} of job {row.job_id} by site {row.site_id} (workflow {row.workflow_id})"


def execution_succeeded(row: pipeline_store.ExecutionRow) -> bool:
    return row.status == ExecutionStatus.SUCCEEDED


def execution_event(row: pipeline_store.ExecutionRow) -> AssetMaterialization:
    """A succeeded execution: what its site made."""
    return AssetMaterialization(
        asset_key=EXECUTIONS,
        description=f"{_execution_text(row)}: {row.status}",
        metadata=_execution_metadata(row),
    )


def execution_finding(row: pipeline_store.ExecutionRow) -> Finding:
    """`execution_succeeded` on this execution: failing for a failed one, passing for a succeeded one."""
    passed = execution_succeeded(row)
    verdict = "OK: " if passed else "FAILED: "
    return Finding(
        EXECUTION_SUCCEEDED,
        passed,
        f"{verdict}{_execution_text(row)}: {row.status}",
        _execution_metadata(row),
    )


def _operation_text(row: pipeline_store.OperationEnding) -> tuple[str, dict[str, Any]]:
    # The error is what the holding site sent: only its code and a bounded message are shown.
    error = row.error if isinstance(row.error, dict) else {}
    code = str(error.get("code") or "")[:ERROR_TEXT_CHARS]
    message = str(error.get("message") or "")[:ERROR_TEXT_CHARS]
    outcome = f"{row.state}, {code}: {message}" if code else row.state
    if row.execution_id:
        outcome += f", execution {row.execution_id}"
    attempt = f"attempt {row.attempt} of {row.max_attempts}"
    text = f"operation {row.id} of job {row.job_id} at site {row.site_id}, {attempt}: {outcome}"
    if row.job_failed_for_good:
        text = f"JOB FAILED: job {row.job_id} has no attempt left; {text}"
    metadata = {
        "operation_id": MetadataValue.text(row.id),
        "api_path": f"/operations/{row.id}",
        "job_id": row.job_id,
        "workflow_id": row.workflow_id,
        "site_id": row.site_id,
        "attempt": row.attempt,
        "max_attempts": row.max_attempts,
        "state": row.state,
        "error_code": code,
        "error_message": message,
        "execution_id": row.execution_id or "",
        "job_status": row.job_status,
        "job_failed_for_good": row.job_failed_for_good,
        "ended_at": row.ended_at.isoformat(),
        "end_seq": row.end_seq,
    }
    return text, metadata


def operation_succeeded(row: pipeline_store.OperationEnding) -> bool | None:
    """True for a success, False for a failure or an expiry, None for a cancel (given back on purpose)."""
    if row.state == OperationState.CANCELED:
        return None
    return row.state == OperationState.SUCCEEDED


def operation_event(row: pipeline_store.OperationEnding) -> AssetObservation:
    """An operation that ended succeeded or canceled."""
    text, metadata = _operation_text(row)
    return AssetObservation(asset_key=OPERATIONS, description=text, metadata=metadata)


def operation_finding(row: pipeline_store.OperationEnding) -> Finding:
    """`operation_succeeded` on this operation: failing for a failed or expired one, passing for a success."""
    text, metadata = _operation_text(row)
    passed = bool(operation_succeeded(row))
    # "JOB FAILED: ..." says more than "FAILED: " would.
    verdict = "OK: " if passed else "" if row.job_failed_for_good else "FAILED: "
    return Finding(OPERATION_SUCCEEDED, passed, verdict + text, metadata)


@dataclass(frozen=True)
class Outcomes(Generic[Row]):
    """How a feed's rows show: whether each `succeeded` (None: neither, a cancel), the `event` of one that did
    (or that is neither), and the `finding` of its check on it."""

    succeeded: Callable[[Row], bool | None]
    event: Callable[[Row], AssetEvent]
    finding: Callable[[Row], Finding]

    def record(self, rows: Sequence[Row], passing: bool | None) -> tuple[list[Any], bool | None]:
        """The asset events of one tick's `rows`, in order, and whether the check passes after them.

        A row that succeeded is an `event`; one that did not is a failing check evaluation; one that is neither
        an `event` that leaves the check as it was. `passing` is the check's state after the last tick (None:
        not known, as after a cursor reset); a tick whose last decisive row succeeded while the check failed, or
        was not known to pass, adds that row's passing evaluation.
        """
        events: list[Any] = []
        last: Row | None = None
        for row in rows:
            ok = self.succeeded(row)
            events.append(self.finding(row).evaluation() if ok is False else self.event(row))
            if ok is not None:
                last = row
        if last is None:
            return events, passing
        if self.succeeded(last) and passing is not True:
            events.append(self.finding(last).evaluation())
        return events, bool(self.succeeded(last))


EXECUTION_OUTCOMES = Outcomes(execution_succeeded, execution_event, execution_finding)
OPERATION_OUTCOMES = Outcomes(operation_succeeded, operation_event, operation_finding)


# can_subset: each check can be executed on its own from the UI.
@multi_asset_check(specs=[EXECUTION_SUCCEEDED, OPERATION_SUCCEEDED], name="outcome_checks", can_subset=True)
def outcome_checks(
    context: AssetCheckExecutionContext, runtime: ResourceParam[RuntimeDatabase]
) -> Iterator[AssetCheckResult]:
    """The checks as "Execute" evaluates them: on the last execution reported, and the last operation that
    ended succeeded, failed or expired (passing when there is none)."""
    with runtime.session() as session:
        execution, operation = pipeline_store.latest_outcomes(session)
    findings = [
        execution_finding(execution)
        if execution
        else Finding(EXECUTION_SUCCEEDED, True, "OK: no execution reported yet", {}),
        operation_finding(operation)
        if operation
        else Finding(OPERATION_SUCCEEDED, True, "OK: no operation ended yet", {}),
    ]
    for finding in findings:
        if AssetCheckKey(finding.spec.asset_key, finding.spec.name) in context.selected_asset_check_keys:
            yield finding.result()
