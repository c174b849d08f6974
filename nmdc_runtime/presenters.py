"""Rows shaped into the read models (`nmdc_runtime/schemas/`), with what they reference loaded in bulk: what the
API answers and what `nmdc-runtime` prints with `--json`, made in one place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from nmdc_runtime.domain import drains as drains_rules
from nmdc_runtime.models import DataResource, Execution, Job, Operation, Site
from nmdc_runtime.schemas.accounts import SiteDrainRead, SiteRead
from nmdc_runtime.schemas.data import DataResourceRead, JobRead
from nmdc_runtime.schemas.executions import ExecutionRead
from nmdc_runtime.schemas.operations import ClaimedOperationRead, OperationMetadata, OperationRead
from nmdc_runtime.store import drains as drains_store
from nmdc_runtime.store import executions as executions_store


def present_executions(
    session: Session,
    executions: Sequence[Execution],
    *,
    outputs: Mapping[str, Sequence[DataResource]] | None = None,
) -> list[ExecutionRead]:
    """Executions as the API shows them, with their outputs in full (`outputs`: each one's, by execution id,
    when the caller has them; else one query for all)."""
    if outputs is None:
        outputs = executions_store.outputs_of(session, executions=executions)
    return [
        ExecutionRead.model_validate(
            {
                **{
                    column: getattr(row, column)
                    for column in ExecutionRead.model_fields
                    if column != "outputs"
                },
                "outputs": [DataResourceRead.model_validate(dr) for dr in outputs[row.id]],
            }
        )
        for row in executions
    ]


def present_execution(
    session: Session, execution: Execution, *, outputs: Sequence[DataResource] | None = None
) -> ExecutionRead:
    """One execution as the API shows it (`outputs`: its output data resources, when the caller has them)."""
    known = None if outputs is None else {execution.id: outputs}
    return present_executions(session, [execution], outputs=known)[0]


_METADATA_FROM_ROW = [name for name in OperationMetadata.model_fields if hasattr(Operation, name)]
"""The metadata keys the server owns: those of `OperationMetadata` that are attributes of the row (a new one is
shown by adding it to both); the others (`progress`, `message`) are the site's."""


def present_operations(
    session: Session, operations: Sequence[Operation], *, results: Sequence[Execution] = ()
) -> list[OperationRead]:
    """Operations as the API shows them: fixed metadata keys from columns, results in full (`results`: those
    already loaded; the others are read)."""
    executions = {row.id: row for row in results}
    executions |= executions_store.executions_by_id(
        session,
        execution_ids=[
            op.result_execution_id
            for op in operations
            if op.result_execution_id and op.result_execution_id not in executions
        ],
    )
    results = {
        row.id: doc
        for row, doc in zip(
            executions.values(), present_executions(session, list(executions.values())), strict=True
        )
    }
    return [
        OperationRead(
            id=op.id,
            done=op.done,
            result=results.get(op.result_execution_id) if op.result_execution_id else None,
            error=op.error,
            metadata=OperationMetadata.model_validate(
                {**(op.extra_metadata or {}), **{name: getattr(op, name) for name in _METADATA_FROM_ROW}}
            ),
            create_time=op.create_time,
            update_time=op.update_time,
            expire_time=op.expire_time,
        )
        for op in operations
    ]


def present_operation(
    session: Session, operation: Operation, *, results: Sequence[Execution] = ()
) -> OperationRead:
    """One operation as the API shows it (`results` as in `present_operations`)."""
    return present_operations(session, [operation], results=results)[0]


def present_claim(session: Session, operation: Operation, job: Job) -> ClaimedOperationRead:
    """A claim the caller did not name the job of: the operation as a claim shows it, and the job."""
    shown = present_operation(session, operation)
    return ClaimedOperationRead(
        **{name: getattr(shown, name) for name in type(shown).model_fields}, job=JobRead.model_validate(job)
    )


def present_sites(session: Session, sites: Sequence[Site], *, drain_after: int) -> list[SiteRead]:
    """Sites as the API shows them, each with its drain (`drains_rules.drain_of`; one query for all)."""
    streaks = drains_store.fault_streaks(
        session, site_ids=[site.id for site in sites], drain_after=drain_after
    )
    shown = []
    for site in sites:
        drain = drains_rules.drain_of(streaks.get(site.id, []), drain_after=drain_after)
        read = SiteRead.model_validate(site)
        if drain is not None:
            read.drained = SiteDrainRead(since=drain.since, operations=list(drain.operations))
        shown.append(read)
    return shown


def present_site(session: Session, site: Site, *, drain_after: int) -> SiteRead:
    """One site as the API shows it."""
    return present_sites(session, [site], drain_after=drain_after)[0]
