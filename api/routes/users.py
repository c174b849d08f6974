"""Users, and who the caller is."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminPrincipal, CurrentPrincipal, SessionDep
from nmdc_runtime.schemas.accounts import PrincipalRead, UserCreate, UserRead
from nmdc_runtime.services import accounts

router = APIRouter(tags=["users"])


@router.post(
    "/users",
    status_code=201,
    response_model=UserRead,
    responses={404: {"description": "Unknown site in site_admin_of"}, 409: {"description": "Name taken"}},
)
def create_user(body: UserCreate, session: SessionDep, _: AdminPrincipal) -> UserRead:
    """Create a user (admin); the answer never carries the password."""
    row = accounts.create_user(
        session,
        username=body.username,
        password=body.password,
        admin=body.admin,
        site_admin_of=body.site_admin_of,
    )
    return UserRead(
        username=row.username,
        admin=row.admin,
        site_admin_of=sorted(set(body.site_admin_of)),
        created_at=row.created_at,
    )


@router.get("/users/me", response_model=PrincipalRead, response_model_exclude_none=True)
def me(principal: CurrentPrincipal) -> PrincipalRead:
    """Who the token belongs to: a user (`username`) or a site client (`client_id`, `site_id`).

    Roles are those the token was issued with; a change of roles shows after the next `POST /token`.
    """
    if principal.is_site:
        return PrincipalRead(
            kind="site_client", client_id=principal.name, site_id=principal.site_id, admin=principal.admin
        )
    return PrincipalRead(
        kind="user",
        username=principal.name,
        admin=principal.admin,
        site_admin_of=sorted(principal.site_admin_of),
    )
