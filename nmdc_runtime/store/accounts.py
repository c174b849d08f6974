"""Sites, site clients and users."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import AlreadyExists, NotFound
from nmdc_runtime.models import Site, SiteClient, User, UserSiteAdmin
from nmdc_runtime.store.pages import PageParams, fetch_page


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


def get_site_client(session: Session, *, client_id: str) -> tuple[SiteClient, Site] | None:
    """A site client by id and its site, in one round trip; None for an unknown id."""
    row = session.execute(
        sa.select(SiteClient, Site)
        .join(Site, Site.id == SiteClient.site_id)
        .where(SiteClient.client_id == client_id)
    ).one_or_none()
    return (row[0], row[1]) if row else None


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


def list_site_clients(
    session: Session, *, site_id: str, page: PageParams
) -> tuple[Sequence[SiteClient], str | None]:
    """One page of a site's clients (revoked ones included), oldest first."""
    return fetch_page(
        session, sa.select(SiteClient).where(SiteClient.site_id == site_id), SiteClient.seq, page
    )


def revoke_site_client(session: Session, *, site_id: str, client_id: str, now: datetime) -> SiteClient:
    """Mark a client of the site revoked (it stays revoked: a repeat changes nothing); NotFound for a client
    that is not the site's."""
    client = session.scalars(
        sa.select(SiteClient)
        .where(SiteClient.client_id == client_id, SiteClient.site_id == site_id)
        .with_for_update()
    ).one_or_none()
    if client is None:
        raise NotFound(f"site {site_id!r} has no client {client_id!r}")
    if client.revoked_at is None:
        client.revoked_at = now
        session.flush()
    return client


def set_site_disabled(session: Session, *, site_id: str, disabled_at: datetime | None) -> Site:
    """Disable (a time) or enable (None) a site; disabling a disabled site keeps its first time. NotFound."""
    return _set_disabled(session, Site, Site.id, site_id, disabled_at, "site")


def set_user_disabled(session: Session, *, username: str, disabled_at: datetime | None) -> User:
    """Disable (a time) or enable (None) a user; disabling a disabled user keeps its first time. NotFound."""
    return _set_disabled(session, User, User.username, username, disabled_at, "user")


def _set_disabled(session: Session, model, key, value: str, disabled_at: datetime | None, what: str):
    row = session.scalars(sa.select(model).where(key == value).with_for_update()).one_or_none()
    if row is None:
        raise NotFound(f"no {what} {value!r}")
    if disabled_at is None or row.disabled_at is None:
        row.disabled_at = disabled_at
        session.flush()
    return row


def get_user_or_404(session: Session, *, username: str) -> User:
    """A user by name, or NotFound."""
    user = session.get(User, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def refused_principals(session: Session, *, revoked_since: datetime) -> tuple[set[str], set[str], set[str]]:
    """(client ids revoked since `revoked_since`, disabled site ids, disabled usernames), in one round trip.

    Revocations older than a token's lifetime are left out: every token issued before them has expired.
    """
    rows = session.execute(
        sa.union_all(
            sa.select(sa.literal("client"), SiteClient.client_id).where(
                SiteClient.revoked_at >= revoked_since
            ),
            sa.select(sa.literal("site"), Site.id).where(Site.disabled_at.is_not(None)),
            sa.select(sa.literal("user"), User.username).where(User.disabled_at.is_not(None)),
        )
    ).all()
    found: dict[str, set[str]] = {"client": set(), "site": set(), "user": set()}
    for kind, name in rows:
        found[kind].add(name)
    return found["client"], found["site"], found["user"]
