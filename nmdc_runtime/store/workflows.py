"""Workflows: what to run on which data types, and what the executing site needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from nmdc_runtime.domain import inputs as inputs_rules
from nmdc_runtime.domain.errors import AlreadyExists, NotFound
from nmdc_runtime.models import Workflow
from nmdc_runtime.store.pages import PageParams, fetch_page

UPDATABLE = frozenset(
    {"name", "version", "data_types", "inputs", "required_capabilities", "config", "enabled", "lease_seconds"}
)


def create_workflow(
    session: Session,
    *,
    workflow_id: str,
    name: str,
    version: str,
    data_types: list[str],
    required_capabilities: list[str],
    config: dict[str, Any],
    enabled: bool = True,
    lease_seconds: int | None = None,
    inputs: dict[str, dict[str, Any]] | None = None,
) -> Workflow:
    """Insert a workflow; an existing id raises AlreadyExists. With `inputs` (roles), its data types are
    theirs."""
    row = session.execute(
        insert(Workflow)
        .values(
            id=workflow_id,
            name=name,
            version=version,
            data_types=_tags(data_types) if inputs is None else inputs_rules.data_types_of(inputs),
            inputs=inputs,
            required_capabilities=_tags(required_capabilities),
            config=config,
            enabled=enabled,
            lease_seconds=lease_seconds,
        )
        .on_conflict_do_nothing(index_elements=[Workflow.id])
        .returning(Workflow)
    ).scalar_one_or_none()
    if row is None:
        raise AlreadyExists(f"workflow {workflow_id!r} already exists")
    return row


def get_workflow(session: Session, *, workflow_id: str, lock: bool = False) -> Workflow:
    """One workflow (locked FOR UPDATE with `lock`), or NotFound."""
    row = session.get(Workflow, workflow_id, with_for_update=lock or None, populate_existing=lock)
    if row is None:
        raise NotFound(f"no workflow {workflow_id!r}")
    return row


def list_workflows(session: Session, *, page: PageParams) -> tuple[Sequence[Workflow], str | None]:
    """One page of workflows, in creation order."""
    return fetch_page(session, sa.select(Workflow), Workflow.seq, page)


def update_workflow(session: Session, *, workflow_id: str, changes: dict[str, Any]) -> Workflow:
    """Set the given fields of a workflow (and `updated_at`); NotFound for an unknown id. New `inputs` (roles)
    set its data types too; `inputs: None` leaves them as they were."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    values = dict(changes)
    for key in ("data_types", "required_capabilities"):
        if key in values:
            values[key] = _tags(values[key])
    if values.get("inputs") is not None:
        values["data_types"] = inputs_rules.data_types_of(values["inputs"])
    row = session.execute(
        sa.update(Workflow)
        .where(Workflow.id == workflow_id)
        .values(**values, updated_at=sa.func.now())
        .returning(Workflow)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no workflow {workflow_id!r}")
    return row


def _tags(values: list[str]) -> list[str]:
    # Sets in meaning: kept sorted and unique so that equal workflows compare equal.
    return sorted(set(values))
