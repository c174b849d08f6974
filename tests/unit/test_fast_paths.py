"""The fast paths' column lists (nmdc_runtime/store/operations.py, store/executions.py) cover every column.

Each hot write has a fast path of two statements beside its general path on locked rows (docs/architecture.md,
"Following a claim"). The fast path's statements name columns; these tests fail when a column of `jobs` or
`operations` is added without deciding what the fast paths do with it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.models import DataResource, Execution, Job, Operation
from nmdc_runtime.store import executions as executions_store
from nmdc_runtime.store import operations as operations_store


def _columns(model) -> set[str]:
    return {attr.key for attr in model.__mapper__.column_attrs}


def test_every_jobs_column_is_read_by_the_fast_paths_or_said_not_to_be():
    read = set(operations_store.SEEN_JOB_FIELDS)
    skipped = operations_store.NOT_READ_BY_FAST_PATHS
    assert not read & skipped
    assert read | skipped == _columns(Job), (
        "a column of jobs is in neither SEEN_JOB_FIELDS (the rules' Job protocol) nor NOT_READ_BY_FAST_PATHS: "
        f"{sorted(_columns(Job) - read - skipped)}; stale names: {sorted((read | skipped) - _columns(Job))}"
    )


def test_every_operations_column_is_given_by_a_claim_or_said_not_to_be():
    assert _columns(Operation) >= operations_store.NOT_SET_BY_CLAIM
    job = operations_store.SeenJob(
        id="job-1",
        workflow_id="wf",
        status="unclaimed",
        attempts=0,
        max_attempts=3,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        group=None,
    )
    given = operations_rules.start_operation(job, site_id="site-e", now=datetime.now(UTC), lease_seconds=60)
    # The claim's statement writes exactly `_CLAIM_FIELDS`: what start_operation gives, and the new id.
    expected = _columns(Operation) - operations_store.NOT_SET_BY_CLAIM
    assert set(given) - {"job_id"} | {"id"} == expected, (
        "start_operation must give every column of operations not in NOT_SET_BY_CLAIM: "
        f"missing {sorted(expected - set(given) - {'id'})}"
    )
    assert set(operations_store._CLAIM_FIELDS) == expected


def test_every_operations_column_is_written_by_a_patch_or_said_not_to_be():
    assert _columns(Operation) >= operations_store.NOT_CHANGED_BY_PATCH
    assert set(operations_store._PATCH_FIELDS) == _columns(Operation) - operations_store.NOT_CHANGED_BY_PATCH
    # What tells that an open operation changed since it was read is among what a PATCH writes.
    assert set(operations_store._OPERATION_VERSION) <= set(operations_store._PATCH_FIELDS)


def test_what_the_rules_change_of_a_job_is_what_the_fast_paths_write_and_compare():
    assert set(operations_store.JOB_MOVED_FIELDS) == set(operations_rules.Job.__annotations__) - (
        operations_store.JOB_FIXED
    )
    assert "updated_at" in operations_store.JOB_MOVED_FIELDS


def test_executions_and_their_outputs_are_written_whole():
    assert set(executions_store._EXECUTION_FIELDS) == _columns(Execution) - {"seq"}
    assert _columns(DataResource) >= executions_store.NOT_GIVEN_BY_OUTPUTS
    assert (
        set(executions_store._OUTPUT_FIELDS) == _columns(DataResource) - executions_store.NOT_GIVEN_BY_OUTPUTS
    )
