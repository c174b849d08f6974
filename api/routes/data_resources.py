"""Data resources: what the sites host."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import (
    CurrentPrincipal,
    GrantKeysDep,
    PageDep,
    PolicyDep,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
    SitePrincipal,
)
from api.idempotency import IdempotencyKeyHeader, idempotent_request, respond
from nmdc_runtime.schemas.common import Page
from nmdc_runtime.schemas.data import AccessUrl, DataResourceCreate, DataResourceRead
from nmdc_runtime.services import catalog as catalog_service
from nmdc_runtime.services import grants as grants_service
from nmdc_runtime.store import data_resources as data_resources_store

router = APIRouter(tags=["data resources"])


@router.post(
    "/data_resources",
    status_code=201,
    response_model=DataResourceRead,
    responses={422: {"description": "Invalid body, or an Idempotency-Key reused for another request"}},
)
def create_data_resource(
    body: DataResourceCreate,
    session: SessionDep,
    principal: SitePrincipal,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Register a data resource hosted by the calling site (site clients only).

    `site_id` is the caller's site. With an `Idempotency-Key` header, a repeat by the same caller with the
    same body gets the data resource the first registered (201, plus `Idempotent-Replayed: true`) and creates
    nothing;
    the same key with a different body is refused with 422, since the key was meant for another request.
    """
    registered = catalog_service.register_data_resource(
        session,
        site_id=principal.site_id,
        fields=body.model_dump(),
        request=idempotent_request(principal, idempotency_key, "POST /data_resources", body),
    )
    return respond(DataResourceRead.model_validate(registered.value), replayed=registered.replayed)


@router.get("/data_resources", response_model=Page[DataResourceRead])
def list_data_resources(
    session: ReadSessionDep,
    _: CurrentPrincipal,
    page: PageDep,
    site_id: Annotated[str | None, Query(max_length=64, description="Hosted by this site.")] = None,
    data_type: Annotated[str | None, Query(max_length=64, description="Of this data type.")] = None,
    group: Annotated[str | None, Query(max_length=256, description="Of this group.")] = None,
) -> Page[DataResourceRead]:
    """Data resources, in registration order."""
    rows, token = data_resources_store.list_data_resources(
        session, page=page, site_id=site_id, data_type=data_type, group=group
    )
    return Page[DataResourceRead](
        resources=[DataResourceRead.model_validate(row) for row in rows], next_page_token=token
    )


@router.get("/data_resources/{data_resource_id}", response_model=DataResourceRead)
def get_data_resource(
    session: ReadSessionDep, _: CurrentPrincipal, data_resource_id: str
) -> DataResourceRead:
    """One data resource."""
    return DataResourceRead.model_validate(
        data_resources_store.get_data_resource(session, data_resource_id=data_resource_id)
    )


@router.post(
    "/data_resources/{data_resource_id}:access",
    response_model=AccessUrl,
    responses={
        403: {
            "description": "Neither a site holding an active claim on a job that reads it (with no cancel "
            "requested), nor the site that owns it, nor an admin"
        },
        404: {"description": "Unknown data resource"},
    },
)
def access_data_resource(
    data_resource_id: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    keys: GrantKeysDep,
    settings: SettingsDep,
    policy: PolicyDep,
) -> AccessUrl:
    """An access grant: the data resource's URL and the `Authorization` header its data site asks for.

    For a site holding an active claim on a job that reads the data resource, unless a cancel was requested
    on it (the grant expires with that claim's lease at the latest), the site that owns it, or an admin.
    Grants are signed with the runtime's grant keys, whose public halves `GET /.well-known/jwks.json`
    publishes, and expire within `NMDC_GRANT_SECONDS` (five minutes by default); the data site checks them
    when a download starts.
    """
    grant = grants_service.grant_access(
        session,
        data_resource_id=data_resource_id,
        principal=principal,
        keys=keys,
        issuer=settings.token_issuer,
        policy=policy,
    )
    return AccessUrl(
        url=grant.url, headers={"Authorization": f"Bearer {grant.token}"}, expire_time=grant.expire_time
    )
