"""API fixtures: an app on this run's database, and callers with tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database
from nmdc_runtime.services import accounts as accounts_service
from nmdc_runtime.store import accounts as accounts_store

ADMIN_PASSWORD = "admin-password-123"


@pytest.fixture
def client(settings: Settings, clean_database: Database) -> Iterator[TestClient]:
    """An API client (no token) on an emptied-after-use database."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def bearer(client: TestClient, **form) -> dict[str, str]:
    """Authorization headers for a token fetched with the given form fields."""
    response = client.post("/token", data=form)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def admin_headers(client: TestClient, clean_database: Database) -> dict[str, str]:
    with clean_database.session() as session:
        accounts_service.create_user(
            session, username="admin", password=ADMIN_PASSWORD, admin=True, actor="tests"
        )
    return bearer(client, grant_type="password", username="admin", password=ADMIN_PASSWORD)


def make_site(database: Database, site_id: str, capabilities: list[str] = ()) -> dict[str, str]:
    """Create a site with credentials; return the token form fields for it."""
    with database.session() as session:
        accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=list(capabilities))
        site_client, secret = accounts_service.generate_credentials(session, site_id=site_id, actor="tests")
    return {"grant_type": "client_credentials", "client_id": site_client.client_id, "client_secret": secret}


@pytest.fixture
def site_headers(client: TestClient, clean_database: Database):
    """A factory: `site_headers("site-e", ["gpu"])` creates the site and returns its auth headers."""

    def make(site_id: str, capabilities: list[str] = ()) -> dict[str, str]:
        return bearer(client, **make_site(clean_database, site_id, capabilities))

    return make
