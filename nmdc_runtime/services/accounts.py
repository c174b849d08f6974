"""Sites, their client credentials, and users: created here, and checked at `POST /token`."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from nmdc_runtime import auth
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.models import Site, SiteClient, User
from nmdc_runtime.services.transactions import transaction
from nmdc_runtime.store import accounts as store


def create_site(
    session: Session, *, site_id: str, name: str, capabilities: Sequence[str], with_credentials: bool = False
) -> tuple[Site, tuple[SiteClient, str] | None]:
    """Register a site (AlreadyExists for a taken id); with its first credentials when asked (client, secret)."""
    with transaction(session):
        site = store.create_site(session, site_id=site_id, name=name, capabilities=list(capabilities))
        credentials = _new_client(session, site_id) if with_credentials else None
        return site, credentials


def generate_credentials(session: Session, *, site_id: str) -> tuple[SiteClient, str]:
    """New credentials for a site (NotFound for an unknown one): the client, and the secret, shown only now."""
    with transaction(session):
        store.get_site(session, site_id=site_id)
        return _new_client(session, site_id)


def _new_client(session: Session, site_id: str) -> tuple[SiteClient, str]:
    secret = auth.new_client_secret()
    client = store.insert_site_client(
        session, site_id=site_id, client_id=auth.new_client_id(), secret_hash=auth.hash_secret(secret)
    )
    return client, secret


def create_user(
    session: Session, *, username: str, password: str, admin: bool = False, site_admin_of: Sequence[str] = ()
) -> User:
    """Create a user, its password hashed; AlreadyExists for a taken name, NotFound for an unknown site."""
    password_hash = auth.hash_secret(password)  # slow: before the transaction, so no lock waits on it
    with transaction(session):
        return store.create_user(
            session, username=username, password_hash=password_hash, admin=admin, site_admin_of=site_admin_of
        )


def authenticate_user(session: Session, *, username: str, password: str) -> Principal | None:
    """The principal for a username and password, or None when they do not match."""
    user = store.get_user(session, username=username)
    if not auth.verify_secret(user.password_hash if user else None, password):
        return None
    return Principal(
        kind="user",
        name=user.username,
        admin=user.admin,
        site_admin_of=frozenset(store.user_site_admin_of(session, username=username)),
    )


def authenticate_site_client(session: Session, *, client_id: str, client_secret: str) -> Principal | None:
    """The principal for a site client's credentials, or None when they do not match."""
    client = store.get_site_client(session, client_id=client_id)
    if not auth.verify_secret(client.secret_hash if client else None, client_secret):
        return None
    return Principal(kind="site_client", name=client.client_id, site_id=client.site_id)
