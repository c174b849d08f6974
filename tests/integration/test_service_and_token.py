"""Health, metrics, tokens and the authentication every endpoint needs."""

from __future__ import annotations

from nmdc_runtime.auth import issue_token
from nmdc_runtime.domain.principals import Principal
from tests.integration.conftest import ADMIN_PASSWORD


def test_health_needs_no_token_and_reports_the_database(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_password_grant_gives_a_bearer_token_with_both_expiry_fields(client, admin_headers):
    response = client.post(
        "/token", data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["expires"] == {"seconds": 3600}


def test_client_credentials_grant_works_and_bad_secret_is_401(client, clean_database):
    from tests.integration.conftest import make_site

    form = make_site(clean_database, "site-a")
    assert client.post("/token", data=form).status_code == 200
    response = client.post("/token", data={**form, "client_secret": "wrong"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_user_is_401(client, clean_database):
    response = client.post(
        "/token", data={"grant_type": "password", "username": "nobody", "password": "x" * 10}
    )
    assert response.status_code == 401


def test_missing_grant_fields_are_422(client, clean_database):
    assert client.post("/token", data={"grant_type": "password", "username": "a"}).status_code == 422
    assert client.post("/token", data={"grant_type": "implicit"}).status_code == 422


def test_metrics_need_a_token(client, admin_headers):
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers=admin_headers)
    assert response.status_code == 200
    assert "nmdc_http_requests_total" in response.text


def test_malformed_forged_and_expired_tokens_are_401(client, settings, clean_database):
    admin = Principal(kind="user", name="admin", admin=True)
    forged = issue_token(admin, key="not-the-server-key-but-long-enough-for-hs256", expires_in=60)
    expired = issue_token(admin, key=settings.jwt_key(), expires_in=-10)
    for value in ("Bearer not-a-jwt", f"Bearer {forged}", f"Bearer {expired}", "Basic abc"):
        response = client.get("/metrics", headers={"Authorization": value})
        assert response.status_code == 401, value
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_valid_token_made_with_the_server_key_is_accepted(client, settings, clean_database):
    admin = Principal(kind="user", name="admin", admin=True)
    token = issue_token(admin, key=settings.jwt_key(), expires_in=60)
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_bodies_over_one_mebibyte_are_413(client, admin_headers):
    response = client.post("/token", content=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    assert "detail" in response.json()


def test_openapi_and_docs_need_no_token(client):
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
