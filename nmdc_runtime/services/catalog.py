"""What sites and staff register: data resources, workflows, and jobs made by hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.models import DataResource, Job, Workflow
from nmdc_runtime.services.transactions import Once, run_once, transaction
from nmdc_runtime.store import data_resources as data_resources_store
from nmdc_runtime.store import idempotency as idempotency_store
from nmdc_runtime.store import jobs as jobs_store
from nmdc_runtime.store import workflows as workflows_store
from nmdc_runtime.store.idempotency import IdempotentRequest


def register_data_resource(
    session: Session, *, site_id: str, fields: dict[str, Any], request: IdempotentRequest
) -> Once[DataResource]:
    """Register a data resource hosted by `site_id`, at most once per `request` key (a repeat gets the data
    resource the first request registered, as it was)."""
    with transaction(session):
        return run_once(
            session,
            request=request,
            create=lambda: data_resources_store.create_data_resource(session, site_id=site_id, **fields),
            document=idempotency_store.row_document,
            restore=lambda document: idempotency_store.row_from_document(DataResource, document),
        )


def create_workflow(session: Session, *, policy: Policy, **fields: Any) -> Workflow:
    """Define a workflow (AlreadyExists for a taken id; InvalidInput for a lease over the maximum)."""
    operations_rules.check_workflow_lease(fields.get("lease_seconds"), max_seconds=policy.max_lease_seconds)
    with transaction(session):
        return workflows_store.create_workflow(session, **fields)


def update_workflow(
    session: Session, *, workflow_id: str, changes: dict[str, Any], policy: Policy
) -> Workflow:
    """Change some of a workflow's fields (NotFound for an unknown id; InvalidInput for a lease over the
    maximum)."""
    operations_rules.check_workflow_lease(changes.get("lease_seconds"), max_seconds=policy.max_lease_seconds)
    with transaction(session):
        return workflows_store.update_workflow(session, workflow_id=workflow_id, changes=changes)


def create_job(session: Session, *, workflow_id: str, data_resource_ids: Sequence[str], **fields: Any) -> Job:
    """Make an unclaimed job of a workflow over data resources by hand; its config is fixed now. `fields` are
    `store.jobs.create_job`'s: `config`, `max_attempts`, `created_by`.

    NotFound names an unknown workflow or data resource.
    """
    with transaction(session):
        workflows_store.get_workflow(session, workflow_id=workflow_id)
        data_resources_store.get_data_resources(session, data_resource_ids=data_resource_ids)
        return jobs_store.create_job(
            session, workflow_id=workflow_id, data_resource_ids=data_resource_ids, **fields
        )
