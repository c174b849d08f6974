"""Data resources: registered by the sites that host them, or by an execution's outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import NotFound
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource
from nmdc_runtime.store.pages import PageParams, fetch_page


def create_data_resource(
    session: Session,
    *,
    site_id: str,
    name: str,
    url: str,
    data_type: str,
    size: int,
    checksums: list[dict[str, Any]],
    description: str | None = None,
    requires_grant: bool = False,
    group: str | None = None,
) -> DataResource:
    """Insert a data resource of `site_id`."""
    fields = {
        "name": name,
        "url": url,
        "data_type": data_type,
        "size": size,
        "checksums": checksums,
        "description": description,
        "requires_grant": requires_grant,
        "group": group,
    }
    return create_data_resources(session, site_id=site_id, resources=[fields])[0]


def create_data_resources(
    session: Session,
    *,
    site_id: str,
    resources: Sequence[Mapping[str, Any]],
    execution_id: str | None = None,
) -> list[DataResource]:
    """Insert data resources of `site_id` (`resources`: each one's fields, as `create_data_resource` takes
    them, with `id` when the caller chose it; `execution_id` when an execution's outputs register them), in the
    order given."""
    if not resources:
        return []
    rows = [
        {
            "description": None,
            "requires_grant": False,
            "group": None,
            **resource,
            "id": resource.get("id") or new_id("dr"),
            "site_id": site_id,
            "execution_id": execution_id,
        }
        for resource in resources
    ]
    # One statement for all: the database fills seq and created_at and hands the rows back, in order.
    return list(
        session.scalars(sa.insert(DataResource).returning(DataResource, sort_by_parameter_order=True), rows)
    )


def get_data_resource(session: Session, *, data_resource_id: str) -> DataResource:
    """One data resource, or NotFound."""
    row = session.get(DataResource, data_resource_id)
    if row is None:
        raise NotFound(f"no data resource {data_resource_id!r}")
    return row


def get_data_resources(session: Session, *, data_resource_ids: Sequence[str]) -> list[DataResource]:
    """The named data resources in the order named (repeats dropped); NotFound names any that are unknown."""
    wanted = list(dict.fromkeys(data_resource_ids))
    rows = {
        row.id: row for row in session.scalars(sa.select(DataResource).where(DataResource.id.in_(wanted)))
    }
    missing = [id_ for id_ in wanted if id_ not in rows]
    if missing:
        raise NotFound(f"no data resource {', '.join(repr(id_) for id_ in missing)}", ids=missing)
    return [rows[id_] for id_ in wanted]


def list_data_resources(
    session: Session,
    *,
    page: PageParams,
    site_id: str | None = None,
    data_type: str | None = None,
    group: str | None = None,
) -> tuple[Sequence[DataResource], str | None]:
    """One page of data resources matching every given filter, in registration order."""
    stmt = sa.select(DataResource)
    if site_id is not None:
        stmt = stmt.where(DataResource.site_id == site_id)
    if data_type is not None:
        stmt = stmt.where(DataResource.data_type == data_type)
    if group is not None:
        stmt = stmt.where(DataResource.group == group)
    return fetch_page(session, stmt, DataResource.seq, page)
