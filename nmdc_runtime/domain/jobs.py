"""How a job is configured: fixed when the job is made, from its workflow and its data resources."""

from __future__ import annotations

from typing import Any

from nmdc_runtime.models import DataResource, Workflow


def data_resource_document(row: DataResource) -> dict[str, Any]:
    """A data resource as the API shows it (and as a job's config carries it)."""
    return {
        "id": row.id,
        "site_id": row.site_id,
        "name": row.name,
        "url": row.url,
        "data_type": row.data_type,
        "size": row.size,
        "checksums": row.checksums,
        "description": row.description,
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
    }


def job_config(
    workflow: Workflow, data_resources: list[DataResource], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The workflow's config as it is now, overridden by `extra`, plus the data resources in full."""
    config = {**workflow.config, **(extra or {})}
    config["data_resources"] = [data_resource_document(row) for row in data_resources]
    return config
