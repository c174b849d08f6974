"""What sites and staff register: data resources, workflows, and jobs made by hand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from nmdc_runtime.domain import inputs as inputs_rules
from nmdc_runtime.domain import operations as operations_rules
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.models import DataResource, Job, Workflow
from nmdc_runtime.services.transactions import Once, run_once, transaction
from nmdc_runtime.store import data_resources as data_resources_store
from nmdc_runtime.store import idempotency as idempotency_store
from nmdc_runtime.store import jobs as jobs_store
from nmdc_runtime.store import pipeline as pipeline_store
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
    maximum, or `data_types` of a workflow whose inputs by role decide them)."""
    operations_rules.check_workflow_lease(changes.get("lease_seconds"), max_seconds=policy.max_lease_seconds)
    with transaction(session):
        if "data_types" in changes:
            workflow = workflows_store.get_workflow(session, workflow_id=workflow_id, lock=True)
            inputs_rules.check_workflow_change(has_inputs=workflow.inputs is not None, changes=changes)
        workflow = workflows_store.update_workflow(session, workflow_id=workflow_id, changes=changes)
        if "inputs" in changes:
            # What its groups miss is judged anew against the new roles: the backfill the change starts
            # records the groups still incomplete.
            pipeline_store.forget_waiting_groups(session, workflow_id=workflow_id)
        return workflow


def create_job(
    session: Session,
    *,
    workflow_id: str,
    data_resource_ids: Sequence[str],
    inputs: Mapping[str, str] | None = None,
    group: str | None = None,
    **fields: Any,
) -> Job:
    """Make an unclaimed job of a workflow by hand, over data resources and inputs by role (role → data
    resource id); its config is fixed now. `fields` are `store.jobs.create_job`'s: `config`, `max_attempts`,
    `created_by`.

    Its inputs are those by role (in role order), then `data_resource_ids`; its group is `group`, else the
    one they share (`inputs_rules.job_group`). NotFound names an unknown workflow or data resource;
    InvalidInput says how `inputs` do not fit the workflow's roles (`inputs_rules.check_job_inputs`).
    """
    inputs = dict(sorted((inputs or {}).items()))
    ids = list(dict.fromkeys([*inputs.values(), *data_resource_ids]))
    with transaction(session):
        workflow = workflows_store.get_workflow(session, workflow_id=workflow_id)
        resources = data_resources_store.get_data_resources(session, data_resource_ids=ids)
        inputs_rules.check_job_inputs(
            roles=workflow.inputs, given=inputs, data_types={dr.id: dr.data_type for dr in resources}
        )
        return jobs_store.create_job(
            session,
            workflow_id=workflow_id,
            data_resource_ids=ids,
            inputs=inputs,
            group=inputs_rules.job_group(given=group, input_groups=(dr.group for dr in resources)),
            **fields,
        )
