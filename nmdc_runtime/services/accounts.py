"""Sites, their client credentials, and users: created, revoked, disabled here, and checked at `POST /token`.

Every change of credentials or of an account's standing is logged on `nmdc_runtime.audit`: who, what, when.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from nmdc_runtime import auth
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.models import Site, SiteClient, User
from nmdc_runtime.services.transactions import transaction
from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store import drains as drains_store

audit = logging.getLogger("nmdc_runtime.audit")


def _audit(actor: str, action: str, target: str, when: datetime) -> None:
    audit.info(
        "%s %s %s at %s", actor, action, target, when.isoformat(), extra={"actor": actor, "action": action}
    )


def create_site(
    session: Session,
    *,
    site_id: str,
    name: str,
    capabilities: Sequence[str],
    actor: str,
    with_credentials: bool = False,
) -> tuple[Site, tuple[SiteClient, str] | None]:
    """Register a site (AlreadyExists for a taken id); with its first credentials when asked (client, secret)."""
    with transaction(session):
        site = accounts_store.create_site(
            session, site_id=site_id, name=name, capabilities=list(capabilities)
        )
        credentials = _new_client(session, site_id) if with_credentials else None
    _audit(actor, "created site", site_id, site.created_at)
    if credentials:
        _audit(
            actor, "generated credentials", f"{credentials[0].client_id} of site {site_id}", site.created_at
        )
    return site, credentials


def generate_credentials(session: Session, *, site_id: str, actor: str) -> tuple[SiteClient, str]:
    """New credentials for a site (NotFound for an unknown one): the client, and the secret, shown only now.

    Rotation is generate-then-revoke: the old client keeps working until it is revoked.
    """
    with transaction(session):
        accounts_store.get_site(session, site_id=site_id)
        client, secret = _new_client(session, site_id)
    _audit(actor, "generated credentials", f"{client.client_id} of site {site_id}", client.created_at)
    return client, secret


def revoke_site_client(session: Session, *, site_id: str, client_id: str, actor: str) -> SiteClient:
    """Revoke a client of the site for good: its secret gets no token, its tokens stop working. NotFound."""
    now = datetime.now(UTC)
    with transaction(session):
        client = accounts_store.revoke_site_client(session, site_id=site_id, client_id=client_id, now=now)
    _audit(actor, "revoked credentials", f"{client_id} of site {site_id}", now)
    return client


def set_site_enabled(session: Session, *, site_id: str, enabled: bool, actor: str) -> Site:
    """Disable a site (its clients get no token and their tokens stop working) or enable it again. NotFound."""
    return _set_standing(
        session, accounts_store.set_site_disabled, "site", {"site_id": site_id}, enabled, actor
    )


def undrain_site(session: Session, *, site_id: str, actor: str, now: datetime | None = None) -> Site:
    """Lift a site's drain (`domain.drains`): its fault streak ends here, so only operations that end after
    this count. Lifting the drain of a site that is not drained resets its count all the same. NotFound."""
    now = now or datetime.now(UTC)
    with transaction(session):
        site = accounts_store.get_site(session, site_id=site_id)
        drains_store.note_undrain(session, site_id=site_id, now=now)
    _audit(actor, "lifted the drain of site", site_id, now)
    return site


def set_user_enabled(session: Session, *, username: str, enabled: bool, actor: str) -> User:
    """Disable a user (no token; existing tokens stop working) or enable it again. NotFound."""
    return _set_standing(
        session, accounts_store.set_user_disabled, "user", {"username": username}, enabled, actor
    )


def _set_standing(session: Session, set_disabled, what: str, key: dict[str, str], enabled: bool, actor: str):
    now = datetime.now(UTC)
    with transaction(session):
        row = set_disabled(session, **key, disabled_at=None if enabled else now)
    _audit(actor, f"{'enabled' if enabled else 'disabled'} {what}", next(iter(key.values())), now)
    return row


def _new_client(session: Session, site_id: str) -> tuple[SiteClient, str]:
    secret = auth.new_client_secret()
    client = accounts_store.insert_site_client(
        session, site_id=site_id, client_id=auth.new_client_id(), secret_hash=auth.hash_secret(secret)
    )
    return client, secret


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    actor: str,
    admin: bool = False,
    site_admin_of: Sequence[str] = (),
) -> User:
    """Create a user, its password hashed; AlreadyExists for a taken name, NotFound for an unknown site."""
    password_hash = auth.hash_secret(password)  # slow: before the transaction, so no lock waits on it
    with transaction(session):
        user = accounts_store.create_user(
            session, username=username, password_hash=password_hash, admin=admin, site_admin_of=site_admin_of
        )
    roles = ["admin"] if admin else []
    roles += [f"admin of {site_id}" for site_id in sorted(set(site_admin_of))]
    _audit(actor, "created user", f"{username} ({', '.join(roles) or 'no roles'})", user.created_at)
    return user


def authenticate_user(session: Session, *, username: str, password: str) -> Principal | None:
    """The principal for a username and password, or None when they do not match or the user is disabled."""
    user = accounts_store.get_user(session, username=username)
    # The hash is checked whatever the standing, so a disabled account costs as much as any other.
    if not auth.verify_secret(user.password_hash if user else None, password) or user.disabled_at is not None:
        return None
    return Principal(
        kind="user",
        name=user.username,
        admin=user.admin,
        site_admin_of=frozenset(accounts_store.user_site_admin_of(session, username=username)),
    )


def authenticate_site_client(session: Session, *, client_id: str, client_secret: str) -> Principal | None:
    """The principal for a site client's credentials, or None when they do not match, the client is revoked
    or its site disabled."""
    found = accounts_store.get_site_client(session, client_id=client_id)
    client, site = found if found else (None, None)
    if not auth.verify_secret(client.secret_hash if client else None, client_secret):
        return None
    if client.revoked_at is not None or site.disabled_at is not None:
        return None
    return Principal(kind="site_client", name=client.client_id, site_id=client.site_id)
