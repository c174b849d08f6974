"""Users, and who the caller is."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminPrincipal, CurrentPrincipal, RevocationsDep, SessionDep
from nmdc_runtime.schemas.accounts import PrincipalRead, UserCreate, UserRead
from nmdc_runtime.services import accounts as accounts_service
from nmdc_runtime.store import accounts as accounts_store

router = APIRouter(tags=["users"])


@router.post(
    "/users",
    status_code=201,
    response_model=UserRead,
    responses={404: {"description": "Unknown site in site_admin_of"}, 409: {"description": "Name taken"}},
)
def create_user(body: UserCreate, session: SessionDep, principal: AdminPrincipal) -> UserRead:
    """Create a user (admin); the answer never carries the password."""
    row = accounts_service.create_user(
        session,
        username=body.username,
        password=body.password,
        admin=body.admin,
        site_admin_of=body.site_admin_of,
        actor=principal.key,
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


def _user_read(session, user) -> UserRead:
    return UserRead(
        username=user.username,
        admin=user.admin,
        site_admin_of=accounts_store.user_site_admin_of(session, username=user.username),
        disabled_at=user.disabled_at,
        created_at=user.created_at,
    )


@router.post(
    "/users/{username}:disable", response_model=UserRead, responses={404: {"description": "Unknown user"}}
)
def disable_user(
    session: SessionDep, principal: AdminPrincipal, revocations: RevocationsDep, username: str
) -> UserRead:
    """Disable a user (admin): 401 at `/token`, and existing tokens stop working, until `:enable`."""
    return _set_user(session, principal, revocations, username, enabled=False)


@router.post(
    "/users/{username}:enable", response_model=UserRead, responses={404: {"description": "Unknown user"}}
)
def enable_user(
    session: SessionDep, principal: AdminPrincipal, revocations: RevocationsDep, username: str
) -> UserRead:
    """Enable a disabled user again (admin); enabling an enabled user changes nothing."""
    return _set_user(session, principal, revocations, username, enabled=True)


def _set_user(session, principal, revocations, username: str, *, enabled: bool) -> UserRead:
    user = accounts_service.set_user_enabled(session, username=username, enabled=enabled, actor=principal.key)
    revocations.user_standing(username, enabled=enabled)
    return _user_read(session, user)
