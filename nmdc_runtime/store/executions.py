"""Executions: what executing sites report, and the data resources their outputs registered."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import NotFound
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Execution
from nmdc_runtime.schemas.common import PageParams
from nmdc_runtime.store import data_resources
from nmdc_runtime.store.pages import fetch_page

# Built once: the statement keeps its cache key (see `store.operations._locking`).
_INSERT_EXECUTION = sa.insert(Execution).returning(Execution, sort_by_parameter_order=True)


def create_execution(
    session: Session,
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
) -> Execution:
    """Insert an execution and register each output as a data resource of `site_id` made by it: two
    statements, whatever the number of outputs."""
    outputs = [{**output, "id": new_id("dr")} for output in outputs]
    values = {
        "id": new_id("exec"),
        "job_id": job_id,
        "site_id": site_id,
        "operation_id": operation_id,
        "workflow_id": workflow_id,
        "status": status,
        "started_at": started_at,
        "ended_at": ended_at,
        "output_ids": [output["id"] for output in outputs],
        "details": details,
        "created_at": now,
        "updated_at": now,
    }
    execution = session.scalars(_INSERT_EXECUTION, [values]).one()
    # After the execution: the outputs reference it.
    data_resources.create_data_resources(
        session, site_id=site_id, resources=outputs, execution_id=execution.id
    )
    return execution


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


def list_executions(
    session: Session, *, job_id: str, page: PageParams
) -> tuple[Sequence[Execution], str | None]:
    """One page of a job's executions, in the order they were reported."""
    return fetch_page(session, sa.select(Execution).where(Execution.job_id == job_id), Execution.seq, page)
