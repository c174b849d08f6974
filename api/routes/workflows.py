"""Workflows: what to run on which data types."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminPrincipal, CurrentPrincipal, PageDep, PolicyDep, ReadSessionDep, SessionDep
from nmdc_runtime.schemas.common import Page
from nmdc_runtime.schemas.data import WorkflowCreate, WorkflowRead, WorkflowUpdate
from nmdc_runtime.services import catalog as catalog_service
from nmdc_runtime.store import workflows as workflows_store

router = APIRouter(tags=["workflows"])


@router.post(
    "/workflows", status_code=201, response_model=WorkflowRead, responses={409: {"description": "Id taken"}}
)
def create_workflow(
    body: WorkflowCreate, session: SessionDep, policy: PolicyDep, _: AdminPrincipal
) -> WorkflowRead:
    """Define a workflow (admin); the sensor makes one of its jobs per new data resource of its data types, or,
    with `inputs` by role, one per group that has a data resource of every required role."""
    row = catalog_service.create_workflow(
        session,
        workflow_id=body.id,
        name=body.name,
        version=body.version,
        data_types=body.data_types,
        inputs=None
        if body.inputs is None
        else {role: spec.model_dump() for role, spec in body.inputs.items()},
        required_capabilities=body.required_capabilities,
        config=body.config,
        enabled=body.enabled,
        lease_seconds=body.lease_seconds,
        policy=policy,
    )
    return WorkflowRead.model_validate(row)


@router.get("/workflows", response_model=Page[WorkflowRead])
def list_workflows(session: ReadSessionDep, _: CurrentPrincipal, page: PageDep) -> Page[WorkflowRead]:
    """Workflows, in creation order."""
    rows, token = workflows_store.list_workflows(session, page=page)
    return Page[WorkflowRead](
        resources=[WorkflowRead.model_validate(row) for row in rows], next_page_token=token
    )


@router.get("/workflows/{workflow_id}", response_model=WorkflowRead)
def get_workflow(session: ReadSessionDep, _: CurrentPrincipal, workflow_id: str) -> WorkflowRead:
    """One workflow."""
    return WorkflowRead.model_validate(workflows_store.get_workflow(session, workflow_id=workflow_id))


@router.patch("/workflows/{workflow_id}", response_model=WorkflowRead)
def update_workflow(
    body: WorkflowUpdate, session: SessionDep, policy: PolicyDep, _: AdminPrincipal, workflow_id: str
) -> WorkflowRead:
    """Change some of a workflow's fields (admin), e.g. `{"enabled": false}`; the others keep their values.

    Jobs already made keep the config they were made with.
    """
    return WorkflowRead.model_validate(
        catalog_service.update_workflow(
            session, workflow_id=workflow_id, changes=body.changes(), policy=policy
        )
    )
