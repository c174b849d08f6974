"""Executions: recorded, and corrected, only by the site that holds the job's active claim.

An execution may change only while the operation it was reported under is still open and holds its lease:
once that operation has ended (finished, released, lapsed) the execution is final, and a late write gets
Conflict, like any other late write from a site that lost its lease.

An execution's `details` are capped like an operation's metadata (`nmdc_runtime.domain.caps`): at most
`MAX_DETAILS_KEYS` keys and `max_bytes` bytes (`NMDC_MAX_METADATA_BYTES`, 64 KiB by default) as compact UTF-8
JSON, when recorded and once a correction is merged, else 422 on the field `details`.

One claim records at most `max_executions` executions (`Policy.max_executions_per_operation`): a holder cannot
grow the store without bound under one claim. Past it, Conflict (`check_room_for_execution`); correcting one
(PATCH) is still allowed. The operation counts them (`execution_count`), so the check holds under concurrent
requests (its SQL form is `store.rules.execution_room`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nmdc_runtime.domain.caps import check_cap
from nmdc_runtime.domain.errors import Conflict, Forbidden, InvalidInput, LeaseLost
from nmdc_runtime.domain.operations import Operation

MAX_DETAILS_KEYS = 100
"""At most this many keys in an execution's details."""


def operation_for_execution(
    *,
    job_id: str,
    operation_id: str,
    site_id: str,
    active: Operation | None,
    named: Operation | None,
) -> Operation:
    """The operation a new execution is recorded under: `active` (the job's operation that holds its lease),
    when `site_id` holds it and `operation_id` names it. `named` is the operation `operation_id` names.

    When `named` is one of the job's operations: Forbidden if it is another site's, Conflict if it has ended
    (a late write). Otherwise (unknown, or another job's): InvalidInput if the caller holds the job's active
    claim, Forbidden if another site does, Conflict if nobody does.
    """
    if named is not None and named.job_id == job_id:
        if named.site_id != site_id:
            raise Forbidden("this operation belongs to another site")
        if active is None or named.id != active.id:
            raise LeaseLost(
                f"operation {operation_id} has ended: site {site_id} holds no active claim on {job_id}"
            )
        return active
    if active is not None and active.site_id == site_id:
        raise InvalidInput(
            f"no operation {operation_id!r} of job {job_id}", field="operation_id", location="body"
        )
    if active is not None:
        raise Forbidden("another site holds this job's claim")
    raise LeaseLost(f"site {site_id} holds no active claim on job {job_id}")


def has_room_for_execution(op: Operation, *, max_executions: int) -> bool:
    """Whether another execution may be recorded under `op`."""
    return op.execution_count < max_executions


def check_room_for_execution(op: Operation, *, max_executions: int) -> None:
    """Conflict when `op` has recorded all the executions one claim may record."""
    if not has_room_for_execution(op, max_executions=max_executions):
        raise Conflict(
            f"operation {op.id} has recorded {op.execution_count} executions, the most one claim may record "
            f"(NMDC_MAX_EXECUTIONS_PER_OPERATION={max_executions}): correct one (PATCH) instead"
        )


def check_correction(
    *,
    execution_id: str,
    execution_site_id: str,
    execution_operation_id: str,
    started_at: datetime,
    site_id: str,
    active: Operation | None,
    ended_at: datetime | None,
) -> None:
    """Forbidden unless `site_id` made the execution; Conflict once its operation has ended; InvalidInput
    for an `ended_at` before `started_at`."""
    if execution_site_id != site_id:
        raise Forbidden("only the executing site may change an execution")
    if active is None or active.id != execution_operation_id:
        raise LeaseLost(f"operation {execution_operation_id} has ended: execution {execution_id} is final")
    if ended_at is not None and ended_at < started_at:
        raise InvalidInput("ended_at is before started_at", field="ended_at", location="body")


def check_details(details: Mapping[str, Any], *, max_bytes: int) -> None:
    """InvalidInput on `details` when a new execution's details exceed a cap."""
    check_cap("details", {}, details, max_keys=MAX_DETAILS_KEYS, max_bytes=max_bytes)


def merged_details(details: Mapping[str, Any], patch: Mapping[str, Any], *, max_bytes: int) -> dict[str, Any]:
    """`details` with `patch` merged in shallowly (a null value removes a key); InvalidInput when the merge
    exceeds a cap and is bigger than `details` were."""
    merged = dict(details)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    check_cap("details", details, merged, max_keys=MAX_DETAILS_KEYS, max_bytes=max_bytes)
    return merged
