"""Sites, site clients and users."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import AlreadyExists, NotFound
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


def insert_site_client(session: Session, *, site_id: str, client_id: str, secret_hash: str) -> SiteClient:
    """Insert credentials of a site (only the secret's hash is stored)."""
    client = SiteClient(client_id=client_id, site_id=site_id, secret_hash=secret_hash)
    session.add(client)
    session.flush()
    return client


def get_site_client(session: Session, *, client_id: str) -> SiteClient | None:
    """A site client by id, or None."""
    return session.get(SiteClient, client_id)


def create_user(
    session: Session, *, username: str, password_hash: str, admin: bool, site_admin_of: Sequence[str]
) -> User:
    """Insert a user; an existing username raises AlreadyExists, an unknown site NotFound."""
    for site_id in site_admin_of:
        get_site(session, site_id=site_id)
    row = session.execute(
        insert(User)
        .values(username=username, password_hash=password_hash, admin=admin)
        .on_conflict_do_nothing(index_elements=[User.username])
        .returning(User)
    ).scalar_one_or_none()
    if row is None:
        raise AlreadyExists(f"user {username!r} already exists")
    for site_id in sorted(set(site_admin_of)):
        session.add(UserSiteAdmin(username=username, site_id=site_id))
    session.flush()
    return row


def get_user(session: Session, *, username: str) -> User | None:
    """A user by name, or None."""
    return session.get(User, username)


def user_site_admin_of(session: Session, *, username: str) -> list[str]:
    """The sites a user administers."""
    return list(
        session.scalars(
            sa.select(UserSiteAdmin.site_id)
            .where(UserSiteAdmin.username == username)
            .order_by(UserSiteAdmin.site_id)
        )
    )
