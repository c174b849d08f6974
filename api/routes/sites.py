"""Sites and their credentials."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import (
    AdminPrincipal,
    CurrentPrincipal,
    PageDep,
    PolicyDep,
    ReadSessionDep,
    RevocationsDep,
    SessionDep,
)
from nmdc_runtime.domain.errors import Forbidden
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.presenters import present_site, present_sites
from nmdc_runtime.schemas.accounts import SiteClientRead, SiteCreate, SiteCredentials, SiteRead
from nmdc_runtime.schemas.common import Page
from nmdc_runtime.services import accounts as accounts_service
from nmdc_runtime.store import accounts as accounts_store

router = APIRouter(tags=["sites"])


@router.post("/sites", status_code=201, response_model=SiteRead, responses={409: {"description": "Id taken"}})
def create_site(body: SiteCreate, session: SessionDep, principal: AdminPrincipal) -> SiteRead:
    """Register a site (admin). Its credentials come from `:generateCredentials`."""
    row, _ = accounts_service.create_site(
        session,
        site_id=body.id,
        name=body.name or body.id,
        capabilities=body.capabilities,
        actor=principal.key,
    )
    return SiteRead.model_validate(row)


@router.get("/sites", response_model=Page[SiteRead])
def list_sites(
    session: ReadSessionDep, _: CurrentPrincipal, page: PageDep, policy: PolicyDep
) -> Page[SiteRead]:
    """Sites, in registration order."""
    rows, token = accounts_store.list_sites(session, page=page)
    return Page[SiteRead](
        resources=present_sites(session, rows, drain_after=policy.site_drain_after), next_page_token=token
    )


@router.get("/sites/{site_id}", response_model=SiteRead)
def get_site(session: ReadSessionDep, _: CurrentPrincipal, policy: PolicyDep, site_id: str) -> SiteRead:
    """One site (never its credentials), with its drain (`drained`: since when, by which operations) or
    null."""
    site = accounts_store.get_site(session, site_id=site_id)
    return present_site(session, site, drain_after=policy.site_drain_after)


@router.post("/sites/{site_id}:generateCredentials", status_code=201, response_model=SiteCredentials)
def generate_credentials(session: SessionDep, principal: CurrentPrincipal, site_id: str) -> SiteCredentials:
    """New client credentials for a site (admin, or a user who administers the site).

    The secret is in this answer only; the runtime keeps just its hash.
    """
    _may_manage_credentials(principal, site_id, "generate its credentials")
    client, secret = accounts_service.generate_credentials(session, site_id=site_id, actor=principal.key)
    return SiteCredentials(client_id=client.client_id, client_secret=secret)


def _may_manage_credentials(principal: Principal, site_id: str, action: str) -> None:
    # Checked before the site's existence, so that non-admins cannot probe which site ids exist.
    if principal.is_site or not principal.may_administer_site(site_id):
        raise Forbidden(f"only an admin or an admin of this site may {action}")


@router.post(
    "/sites/{site_id}:undrain",
    response_model=SiteRead,
    responses={
        403: {"description": "Neither an admin nor an admin of this site (site clients included)"},
        404: {"description": "Unknown site"},
    },
)
def undrain_site(
    session: SessionDep, principal: CurrentPrincipal, policy: PolicyDep, site_id: str
) -> SiteRead:
    """Lift the site's drain (admin, or a user who administers the site): it may claim jobs again, and only
    operations that end from now on count toward draining it again. Lifting the drain of a site that is not
    drained resets its count all the same."""
    _may_manage_credentials(principal, site_id, "lift its drain")
    site = accounts_service.undrain_site(session, site_id=site_id, actor=principal.key)
    return present_site(session, site, drain_after=policy.site_drain_after)


@router.get(
    "/sites/{site_id}/clients",
    response_model=Page[SiteClientRead],
    responses={403: {"description": "Neither an admin nor an admin of this site"}},
)
def list_site_clients(
    session: ReadSessionDep, principal: CurrentPrincipal, page: PageDep, site_id: str
) -> Page[SiteClientRead]:
    """A site's client credentials, revoked ones included, oldest first: ids and times, never secrets
    (admin, or a user who administers the site)."""
    _may_manage_credentials(principal, site_id, "list its credentials")
    accounts_store.get_site(session, site_id=site_id)
    rows, token = accounts_store.list_site_clients(session, site_id=site_id, page=page)
    return Page[SiteClientRead](
        resources=[SiteClientRead.model_validate(row) for row in rows], next_page_token=token
    )


@router.delete(
    "/sites/{site_id}/clients/{client_id}",
    status_code=204,
    responses={
        204: {"description": "Revoked (revoking a revoked client changes nothing)"},
        403: {"description": "Neither an admin nor an admin of this site"},
        404: {"description": "The site has no such client"},
    },
)
def revoke_site_client(
    session: SessionDep,
    principal: CurrentPrincipal,
    revocations: RevocationsDep,
    site_id: str,
    client_id: str,
) -> Response:
    """Revoke a client for good (admin, or a user who administers the site): its secret gets 401 at
    `/token`, and tokens already issued with it stop working (at once on this API process, within
    NMDC_REVOCATION_REFRESH_SECONDS on the others). To rotate, generate new credentials, move the site to
    them, then revoke the old client."""
    _may_manage_credentials(principal, site_id, "revoke its credentials")
    accounts_service.revoke_site_client(session, site_id=site_id, client_id=client_id, actor=principal.key)
    revocations.client_revoked(client_id)
    return Response(status_code=204)


@router.post(
    "/sites/{site_id}:disable", response_model=SiteRead, responses={404: {"description": "Unknown site"}}
)
def disable_site(
    session: SessionDep,
    principal: AdminPrincipal,
    revocations: RevocationsDep,
    policy: PolicyDep,
    site_id: str,
) -> SiteRead:
    """Disable a site (admin): its clients get 401 at `/token` and their tokens stop working, until
    `:enable`. Its jobs, operations and data stay as they are (its open operations lapse if nobody renews
    them)."""
    return _set_site(session, principal, revocations, policy, site_id, enabled=False)


@router.post(
    "/sites/{site_id}:enable", response_model=SiteRead, responses={404: {"description": "Unknown site"}}
)
def enable_site(
    session: SessionDep,
    principal: AdminPrincipal,
    revocations: RevocationsDep,
    policy: PolicyDep,
    site_id: str,
) -> SiteRead:
    """Enable a disabled site again (admin); enabling an enabled site changes nothing."""
    return _set_site(session, principal, revocations, policy, site_id, enabled=True)


def _set_site(session, principal: Principal, revocations, policy, site_id: str, *, enabled: bool) -> SiteRead:
    site = accounts_service.set_site_enabled(session, site_id=site_id, enabled=enabled, actor=principal.key)
    revocations.site_standing(site_id, enabled=enabled)
    return present_site(session, site, drain_after=policy.site_drain_after)
