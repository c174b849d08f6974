"""Executions: what executing sites report, and the data resources their outputs registered."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import NotFound
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Execution, IdempotencyKey, Operation
from nmdc_runtime.store import data_resources as data_resources_store
from nmdc_runtime.store import idempotency as idempotency_store
from nmdc_runtime.store import operations as operations_store
from nmdc_runtime.store.idempotency import IdempotentRequest
from nmdc_runtime.store.pages import PageParams, fetch_page
from nmdc_runtime.store.rules import execution_room

# Built once: the statement keeps its cache key (see `store.operations._locking`).
_INSERT_EXECUTION = sa.insert(Execution).returning(Execution, sort_by_parameter_order=True)


def create_execution(session: Session, **fields: Any) -> tuple[Execution, list[DataResource]]:
    """Insert an execution made by `new_execution(**fields)` and register each output as a data resource of its
    site made by it: two statements, whatever the number of outputs. The rows, as inserted, in order."""
    execution, outputs = new_execution(**fields)
    row = session.scalars(
        _INSERT_EXECUTION, [{name: getattr(execution, name) for name in _EXECUTION_FIELDS}]
    ).one()
    # After the execution: the outputs reference it.
    resources = data_resources_store.create_data_resources(
        session,
        site_id=row.site_id,
        resources=[{name: getattr(output, name) for name in _OUTPUT_FIELDS} for output in outputs],
        execution_id=row.id,
    )
    return row, resources


def new_execution(
    *,
    job_id: str,
    site_id: str,
    operation_id: str,
    workflow_id: str,
    status: str,
    started_at: datetime,
    ended_at: datetime,
    outputs: Iterable[dict[str, Any]],
    details: dict[str, Any],
    now: datetime,
    group: str | None = None,
) -> tuple[Execution, list[DataResource]]:
    """An execution and its outputs' data resources as `create_execution` and `record_as_seen` write them: new
    objects, every value chosen here (ids, times), so that one statement can write them all. An output that
    names no group takes `group`, its job's."""
    execution = Execution(
        id=new_id("exec"),
        job_id=job_id,
        site_id=site_id,
        operation_id=operation_id,
        workflow_id=workflow_id,
        status=status,
        started_at=started_at,
        ended_at=ended_at,
        details=details,
        created_at=now,
        updated_at=now,
    )
    resources = [
        DataResource(
            **{"description": None, "requires_grant": False, **output, "group": output.get("group") or group},
            id=new_id("dr"),
            site_id=site_id,
            execution_id=execution.id,
            created_at=now,
        )
        for output in outputs
    ]
    execution.output_ids = [resource.id for resource in resources]
    return execution, resources


_EXECUTION_FIELDS = tuple(attr.key for attr in Execution.__mapper__.column_attrs if attr.key != "seq")
"""What `record_as_seen` writes of an execution: every column `new_execution` chose (the database numbers
`seq`)."""
NOT_GIVEN_BY_OUTPUTS = frozenset({"seq", "site_id", "execution_id", "created_at", "matched_at"})
"""Columns of an output's data resource that are not in the output itself: the database's, the execution's,
and the sensor's."""
_OUTPUT_FIELDS = {
    column.name: column.type for column in DataResource.__table__.c if column.name not in NOT_GIVEN_BY_OUTPUTS
}
"""An output's columns, as the statement reads them from its JSON parameter."""
_KEY_FIELDS = idempotency_store.KEY_COLUMNS


def _parameters(prefix: str, model: type, columns: tuple[str, ...]) -> sa.Select:
    """SELECT of one bound parameter per column (`<prefix>_<column>`, of the column's type): the row an
    `INSERT ... SELECT` writes."""
    table = model.__table__
    return sa.select(*(sa.bindparam(f"{prefix}_{column}", type_=table.c[column].type) for column in columns))


def _record_as_seen_statement() -> sa.Select:
    """The statement of `record_as_seen`, built once: `exec_<column>` parameters for the execution, `outputs`
    (a JSON array of the outputs' `_OUTPUT_FIELDS`), `key_<column>` and `keyed` for the Idempotency-Key row,
    `max_executions` for the cap, and the lock parameters of `store.operations.job_locked_as_seen` and
    `operation_as_seen`."""
    locked = operations_store.job_locked_as_seen()
    # The cap is checked on the locked row: a statement that waited for the lock reads the row again (READ
    # COMMITTED re-checks the conditions on its latest version), so it sees the count the one before it left.
    held = (
        sa.select(Operation.id)
        .where(
            *operations_store.operation_as_seen(locked),
            execution_room(sa.bindparam("max_executions", type_=sa.Integer)),
        )
        .with_for_update()
        .cte("held")
    )
    # With a key, everything hangs on claiming its row: a repeat (the row exists) writes nothing.
    keyed = (
        pg_insert(IdempotencyKey)
        .from_select(
            list(_KEY_FIELDS),
            _parameters("key", IdempotencyKey, _KEY_FIELDS).where(
                sa.bindparam("keyed", type_=sa.Boolean), sa.exists(sa.select(held.c.id))
            ),
        )
        .on_conflict_do_nothing(index_elements=[IdempotencyKey.principal, IdempotencyKey.key])
        .returning(IdempotencyKey.key)
        .cte("keyed")
    )
    inserted = (
        pg_insert(Execution)
        .from_select(
            list(_EXECUTION_FIELDS),
            _parameters("exec", Execution, _EXECUTION_FIELDS).where(
                sa.exists(sa.select(held.c.id)),
                sa.or_(sa.not_(sa.bindparam("keyed", type_=sa.Boolean)), sa.exists(sa.select(keyed.c.key))),
            ),
        )
        .returning(Execution.id, Execution.operation_id)
        .cte("inserted")
    )
    counted = (
        sa.update(Operation)
        .where(Operation.id == sa.select(inserted.c.operation_id).scalar_subquery())
        # A constant in the statement, not a parameter: it is compiled once, and given its named parameters only.
        .values(execution_count=Operation.execution_count + sa.literal_column("1", sa.Integer))
        .cte("counted")
    )
    given = (
        sa.func.jsonb_to_recordset(sa.bindparam("outputs", type_=JSONB))
        .table_valued(*(sa.column(name, type_) for name, type_ in _OUTPUT_FIELDS.items()))
        .render_derived(with_types=True)
    )
    outputs = (
        pg_insert(DataResource)
        .from_select(
            [*_OUTPUT_FIELDS, "site_id", "execution_id", "created_at"],
            sa.select(
                *(given.c[name] for name in _OUTPUT_FIELDS),
                sa.bindparam("exec_site_id", type_=sa.Text),
                inserted.c.id,
                sa.bindparam("exec_created_at", type_=DataResource.__table__.c.created_at.type),
            ).select_from(given.join(inserted, sa.true())),
        )
        .cte("outputs")
    )
    return sa.select(inserted.c.id).add_cte(outputs).add_cte(counted)


_RECORD_AS_SEEN = operations_store.driver_sql(_record_as_seen_statement())


def record_as_seen(
    session: Session,
    *,
    execution: Execution,
    outputs: Sequence[DataResource],
    operation: Operation,
    job: operations_store.SeenJob,
    seen: operations_store.Versions,
    request: IdempotentRequest,
    created: Any,
    max_executions: int,
) -> bool:
    """Write a new execution and its outputs (`new_execution`) under an operation and its job read at the
    versions `seen`, in one statement: lock the job if it is still as seen, and the operation if it is still
    open and as seen and has recorded fewer than `max_executions` executions (`rules.execution_room`), claim the
    request's Idempotency-Key row with `created` (when it has a key: what it remembers, see
    `store.idempotency`), insert the execution and its outputs and count it on the operation. False, and
    nothing written, when the job or the operation changed, the operation has no room left, or the key is
    taken (a repeat: the general path replays it)."""
    keyed = request.key is not None
    params = {
        **{f"exec_{column}": getattr(execution, column) for column in _EXECUTION_FIELDS},
        "exec_details": json.dumps(execution.details),
        "outputs": json.dumps([{name: getattr(row, name) for name in _OUTPUT_FIELDS} for row in outputs]),
        "keyed": keyed,
        "max_executions": max_executions,
        **operations_store.seen_parameters(operation, job, seen),
        **(
            idempotency_store.key_row(request, created)
            if keyed
            else {f"key_{column}": None for column in _KEY_FIELDS}
        ),
    }
    return session.connection().exec_driver_sql(_RECORD_AS_SEEN, params).one_or_none() is not None


def get_execution(session: Session, *, job_id: str, execution_id: str, lock: bool = False) -> Execution:
    """One execution of a job, or NotFound."""
    stmt = sa.select(Execution).where(Execution.id == execution_id, Execution.job_id == job_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise NotFound(f"no execution {execution_id!r} of job {job_id!r}")
    return row


def executions_by_id(session: Session, *, execution_ids: Iterable[str]) -> dict[str, Execution]:
    """The named executions, by id (unknown ids are left out)."""
    wanted = list(set(execution_ids))
    if not wanted:
        return {}
    return {row.id: row for row in session.scalars(sa.select(Execution).where(Execution.id.in_(wanted)))}


def latest_of_operation(session: Session, *, operation_id: str) -> Execution | None:
    """The execution recorded last under an operation (None: none was)."""
    return session.scalars(
        sa.select(Execution)
        .where(Execution.operation_id == operation_id)
        .order_by(Execution.seq.desc())
        .limit(1)
    ).one_or_none()


def outputs_of(session: Session, *, executions: Iterable[Execution]) -> dict[str, list[DataResource]]:
    """Each execution's output data resources, in the order it reported them (one query for all)."""
    executions = list(executions)
    wanted = [id_ for execution in executions for id_ in execution.output_ids]
    rows = (
        {row.id: row for row in session.scalars(sa.select(DataResource).where(DataResource.id.in_(wanted)))}
        if wanted
        else {}
    )
    return {e.id: [rows[id_] for id_ in e.output_ids if id_ in rows] for e in executions}


_EXECUTION_BYTES = operations_store.execution_bytes()
"""What an execution weighs in a page: its row and its outputs."""


def list_executions(
    session: Session, *, job_id: str, page: PageParams
) -> tuple[Sequence[Execution], str | None]:
    """One page of a job's executions, in the order they were reported."""
    return fetch_page(
        session,
        sa.select(Execution).where(Execution.job_id == job_id),
        Execution.seq,
        page,
        weight=_EXECUTION_BYTES,
    )
