"""The credential lifecycle: list, revoke and rotate a site's clients; disable and enable sites and users.

After a revocation or a disabling, the secret gets 401 at `/token` and tokens already issued stop working: at
once on the API process that made the change, within `NMDC_REVOCATION_REFRESH_SECONDS` on the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from nmdc_runtime.config import Settings
from tests.integration.builders import USER_PASSWORD, make_user_headers
from tests.integration.conftest import ADMIN_PASSWORD, bearer, make_site


@pytest.fixture
def site_e(client, clean_database) -> dict[str, str]:
    """The token form of site-e's first client."""
    return make_site(clean_database, "site-e", ["gpu"])


def _token(client: TestClient, form: dict[str, str]):
    return client.post("/token", data=form)


def _me(client: TestClient, headers: dict[str, str]):
    return client.get("/users/me", headers=headers)


def test_clients_are_listed_without_secrets_to_admins_and_the_sites_admins(
    client, admin_headers, site_e, clean_database
):
    second = client.post("/sites/site-e:generateCredentials", headers=admin_headers).json()
    make_site(clean_database, "site-f")
    response = client.get("/sites/site-e/clients", headers=admin_headers)
    assert response.status_code == 200, response.text
    listed = response.json()["resources"]
    assert [c["client_id"] for c in listed] == [site_e["client_id"], second["client_id"]]
    assert all(set(c) == {"client_id", "site_id", "created_at", "revoked_at"} for c in listed)
    assert site_e["client_secret"] not in response.text and second["client_secret"] not in response.text

    site_admin = make_user_headers(client, clean_database, "eve", site_admin_of=["site-e"])
    assert client.get("/sites/site-e/clients", headers=site_admin).status_code == 200
    assert client.get("/sites/site-f/clients", headers=site_admin).status_code == 403
    plain = make_user_headers(client, clean_database, "bob")
    assert client.get("/sites/site-e/clients", headers=plain).status_code == 403
    # A site client may not manage credentials, not even its own site's.
    assert client.get("/sites/site-e/clients", headers=bearer(client, **site_e)).status_code == 403
    assert client.get("/sites/nosuch/clients", headers=admin_headers).status_code == 404


def test_a_revoked_secret_gets_401_and_its_tokens_stop_working_at_once(client, admin_headers, site_e, caplog):
    headers = bearer(client, **site_e)
    assert _me(client, headers).status_code == 200
    with caplog.at_level(logging.INFO, logger="nmdc_runtime.audit"):
        response = client.delete(f"/sites/site-e/clients/{site_e['client_id']}", headers=admin_headers)
    assert response.status_code == 204
    assert _token(client, site_e).status_code == 401
    refused = _me(client, headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    # Who, what, when.
    (record,) = [r for r in caplog.records if r.name == "nmdc_runtime.audit"]
    assert "user:admin revoked credentials" in record.getMessage()
    assert site_e["client_id"] in record.getMessage()
    # Revoking again changes nothing; the listing shows when.
    assert (
        client.delete(f"/sites/site-e/clients/{site_e['client_id']}", headers=admin_headers).status_code
        == 204
    )
    (listed,) = client.get("/sites/site-e/clients", headers=admin_headers).json()["resources"]
    assert listed["revoked_at"] is not None


def test_rotation_is_generate_then_revoke(client, admin_headers, site_e, clean_database):
    site_admin = make_user_headers(client, clean_database, "eve", site_admin_of=["site-e"])
    new = client.post("/sites/site-e:generateCredentials", headers=site_admin).json()
    new_form = {"grant_type": "client_credentials", **new}
    # Both work until the old one is revoked, so the site can move over without a gap.
    assert _token(client, site_e).status_code == 200
    assert _token(client, new_form).status_code == 200
    revoked = client.delete(f"/sites/site-e/clients/{site_e['client_id']}", headers=site_admin)
    assert revoked.status_code == 204
    assert _token(client, site_e).status_code == 401
    assert _me(client, bearer(client, **new_form)).status_code == 200


def test_revoking_needs_the_sites_admin_and_a_client_of_that_site(
    client, admin_headers, site_e, clean_database
):
    other = make_site(clean_database, "site-f")
    site_admin_f = make_user_headers(client, clean_database, "fay", site_admin_of=["site-f"])
    assert (
        client.delete(f"/sites/site-e/clients/{site_e['client_id']}", headers=site_admin_f).status_code == 403
    )
    # A client id of another site, named under this one, is unknown here.
    assert (
        client.delete(f"/sites/site-f/clients/{site_e['client_id']}", headers=site_admin_f).status_code == 404
    )
    assert client.delete("/sites/site-f/clients/sc-nosuch", headers=admin_headers).status_code == 404
    assert _token(client, site_e).status_code == 200
    assert _token(client, other).status_code == 200


def test_a_disabled_site_gets_no_token_and_its_tokens_stop_until_enabled(
    client, clean_database, admin_headers, site_e
):
    headers = bearer(client, **site_e)
    site_admin = make_user_headers(client, clean_database, "eve", site_admin_of=["site-e"])
    assert client.post("/sites/site-e:disable", headers=site_admin).status_code == 403
    response = client.post("/sites/site-e:disable", headers=admin_headers)
    assert response.status_code == 200
    assert response.json()["disabled_at"] is not None
    assert _token(client, site_e).status_code == 401
    assert _me(client, headers).status_code == 401
    assert client.get("/sites/site-e", headers=admin_headers).json()["disabled_at"] is not None
    enabled = client.post("/sites/site-e:enable", headers=admin_headers)
    assert (enabled.status_code, enabled.json()["disabled_at"]) == (200, None)
    assert _me(client, headers).status_code == 200
    assert _token(client, site_e).status_code == 200
    assert client.post("/sites/nosuch:disable", headers=admin_headers).status_code == 404


def test_a_disabled_user_gets_no_token_and_its_tokens_stop_until_enabled(
    client, clean_database, admin_headers
):
    headers = make_user_headers(client, clean_database, "bob")
    form = {"grant_type": "password", "username": "bob", "password": USER_PASSWORD}
    assert client.post("/users/bob:disable", headers=headers).status_code == 403
    response = client.post("/users/bob:disable", headers=admin_headers)
    assert (response.status_code, response.json()["username"]) == (200, "bob")
    assert response.json()["disabled_at"] is not None
    assert _token(client, form).status_code == 401
    assert _me(client, headers).status_code == 401
    assert client.post("/users/bob:enable", headers=admin_headers).json()["disabled_at"] is None
    assert _me(client, headers).status_code == 200
    assert _token(client, form).status_code == 200
    assert client.post("/users/nosuch:disable", headers=admin_headers).status_code == 404
    # The admin's own token still works: only bob was disabled.
    assert _me(client, admin_headers).status_code == 200


@pytest.fixture
def other_process(settings: Settings, clean_database) -> Iterator[TestClient]:
    """A second API process on the same database, reloading its list every 0.2 s."""
    quick = settings.model_copy(update={"revocation_refresh_seconds": 0.2})
    with TestClient(create_app(quick)) as client:
        yield client


def test_another_api_process_refuses_the_token_within_its_refresh_period(
    client, clean_database, admin_headers, site_e, other_process
):
    headers = bearer(other_process, **site_e)
    assert _me(other_process, headers).status_code == 200
    user_headers = make_user_headers(client, clean_database, "bob")
    assert _me(other_process, user_headers).status_code == 200
    assert (
        client.delete(f"/sites/site-e/clients/{site_e['client_id']}", headers=admin_headers).status_code
        == 204
    )
    assert client.post("/users/bob:disable", headers=admin_headers).status_code == 200
    started = time.monotonic()
    while (
        _me(other_process, headers).status_code == 200 or _me(other_process, user_headers).status_code == 200
    ):
        assert time.monotonic() - started < 5, "the other process kept honouring revoked credentials"
        time.sleep(0.05)


def test_the_admin_password_is_checked_as_before(client, clean_database, admin_headers):
    # The lifecycle changes nothing for valid credentials.
    form = {"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD}
    assert _token(client, form).status_code == 200
