"""Sites and their credentials."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminPrincipal, CurrentPrincipal, PageDep, SessionDep
from nmdc_runtime.domain.errors import Forbidden
from nmdc_runtime.schemas.accounts import SiteCreate, SiteCredentials, SiteRead
from nmdc_runtime.schemas.common import Page
from nmdc_runtime.services import accounts as services
from nmdc_runtime.store import accounts

router = APIRouter(tags=["sites"])


@router.post("/sites", status_code=201, response_model=SiteRead, responses={409: {"description": "Id taken"}})
def create_site(body: SiteCreate, session: SessionDep, _: AdminPrincipal) -> SiteRead:
    """Register a site (admin). Its credentials come from `:generateCredentials`."""
    row, _ = services.create_site(
        session, site_id=body.id, name=body.name or body.id, capabilities=body.capabilities
    )
    return SiteRead.model_validate(row)


@router.get("/sites", response_model=Page[SiteRead])
def list_sites(session: SessionDep, _: CurrentPrincipal, page: PageDep) -> Page[SiteRead]:
    """Sites, in registration order."""
    rows, token = accounts.list_sites(session, page=page)
    return Page[SiteRead](resources=[SiteRead.model_validate(row) for row in rows], next_page_token=token)


@router.get("/sites/{site_id}", response_model=SiteRead)
def get_site(session: SessionDep, _: CurrentPrincipal, site_id: str) -> SiteRead:
    """One site (never its credentials)."""
    return SiteRead.model_validate(accounts.get_site(session, site_id=site_id))


@router.post("/sites/{site_id}:generateCredentials", status_code=201, response_model=SiteCredentials)
def generate_credentials(session: SessionDep, principal: CurrentPrincipal, site_id: str) -> SiteCredentials:
    """New client credentials for a site (admin, or a user who administers the site).

    The secret is in this answer only; the runtime keeps just its hash.
    """
    # Checked before the site's existence, so that non-admins cannot probe which site ids exist.
    if principal.is_site or not principal.may_administer_site(site_id):
        raise Forbidden("only an admin or an admin of this site may generate its credentials")
    client, secret = services.generate_credentials(session, site_id=site_id)
    return SiteCredentials(client_id=client.client_id, client_secret=secret)
