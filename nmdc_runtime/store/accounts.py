"""Sites, site clients and users."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from nmdc_runtime import auth
from nmdc_runtime.domain.errors import AlreadyExists, NotFound
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.models import Site, SiteClient, User, UserSiteAdmin
from nmdc_runtime.schemas.common import PageParams
from nmdc_runtime.store.pages import fetch_page


def create_site(session: Session, *, site_id: str, name: str, capabilities: list[str]) -> Site:
    """Insert a site; an existing id raises AlreadyExists."""
    row = session.execute(
        insert(Site)
        .values(id=site_id, name=name, capabilities=sorted(set(capabilities)))
        .on_conflict_do_nothing(index_elements=[Site.id])
        .returning(Site)
    ).scalar_one_or_none()
    if row is None:
        raise AlreadyExists(f"site {site_id!r} already exists")
    return row


def get_site(session: Session, *, site_id: str) -> Site:
    """One site, or NotFound."""
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound(f"no site {site_id!r}")
    return site


def list_sites(session: Session, *, page: PageParams) -> tuple[Sequence[Site], str | None]:
    """One page of sites, in creation order, and the next page's token."""
    return fetch_page(session, sa.select(Site), Site.seq, page)


def create_site_client(session: Session, *, site_id: str) -> tuple[SiteClient, str]:
    """New credentials for a site: the stored client and the secret, which is returned only here."""
    get_site(session, site_id=site_id)
    secret = auth.new_client_secret()
    client = SiteClient(client_id=auth.new_client_id(), site_id=site_id, secret_hash=auth.hash_secret(secret))
    session.add(client)
    session.flush()
    return client, secret


def create_user(
    session: Session, *, username: str, password: str, admin: bool = False, site_admin_of: list[str] = ()
) -> User:
    """Insert a user (password hashed); an existing username raises AlreadyExists, an unknown site NotFound."""
    for site_id in site_admin_of:
        get_site(session, site_id=site_id)
    row = session.execute(
        insert(User)
        .values(username=username, password_hash=auth.hash_secret(password), admin=admin)
        .on_conflict_do_nothing(index_elements=[User.username])
        .returning(User)
    ).scalar_one_or_none()
    if row is None:
        raise AlreadyExists(f"user {username!r} already exists")
    for site_id in sorted(set(site_admin_of)):
        session.add(UserSiteAdmin(username=username, site_id=site_id))
    session.flush()
    return row


def user_site_admin_of(session: Session, *, username: str) -> list[str]:
    """The sites a user administers."""
    return list(
        session.scalars(
            sa.select(UserSiteAdmin.site_id)
            .where(UserSiteAdmin.username == username)
            .order_by(UserSiteAdmin.site_id)
        )
    )


def authenticate_user(session: Session, *, username: str, password: str) -> Principal | None:
    """The principal for a username and password, or None when they do not match."""
    user = session.get(User, username)
    if not auth.verify_secret(user.password_hash if user else None, password):
        return None
    return Principal(
        kind="user",
        name=user.username,
        admin=user.admin,
        site_admin_of=frozenset(user_site_admin_of(session, username=username)),
    )


def authenticate_site_client(session: Session, *, client_id: str, client_secret: str) -> Principal | None:
    """The principal for a site client's credentials, or None when they do not match."""
    client = session.get(SiteClient, client_id)
    if not auth.verify_secret(client.secret_hash if client else None, client_secret):
        return None
    return Principal(kind="site_client", name=client.client_id, site_id=client.site_id)
