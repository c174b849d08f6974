"""Health, metrics, tokens and the authentication every endpoint needs."""

from __future__ import annotations

import re

import pytest

from nmdc_runtime.auth import issue_token
from nmdc_runtime.domain.principals import Principal
from tests.integration.conftest import ADMIN_PASSWORD


def test_health_needs_no_token_and_reports_the_database(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}
    assert client.head("/health").status_code == 200


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


def test_missing_grant_fields_are_422_naming_the_field(client, clean_database):
    for form, field in (
        ({"grant_type": "password", "username": "a"}, "password"),
        ({"grant_type": "client_credentials", "client_secret": "s"}, "client_id"),
        ({"grant_type": "implicit"}, "grant_type"),
    ):
        response = client.post("/token", data=form)
        assert response.status_code == 422
        # The documented shape (HTTPValidationError), like every other 422.
        assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]


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


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_file_from_the_api_itself(client, page):
    html = client.get(page).text
    # Whatever the page loads (scripts, styles, icon, the OpenAPI document) is a path on this API, never a CDN.
    loaded = re.findall(r"""(?:src|href)=["']([^"']+)|(?:url|spec-url)\s*[:=]\s*["']([^"']+)""", html)
    urls = {a or b for a, b in loaded}
    assert urls, html
    assert all(url.startswith("/") for url in urls), urls
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 1000, url
    assert "/openapi.json" in urls


def test_docs_assets_are_a_fixed_set(client):
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    for name in ("../__init__.py", "core.py", "..%2F__init__.py", "nothing.js"):
        assert client.get(f"/docs/assets/{name}").status_code == 404, name


def test_streamed_bodies_over_the_limit_are_413_too(client, admin_headers):
    def chunks():
        for _ in range(3):
            yield b"x" * (512 * 1024)

    # No Content-Length: the server only learns the size while reading.
    response = client.post(
        "/sites", content=chunks(), headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_text_postgresql_cannot_store_is_422_everywhere(client, admin_headers):
    answers = [
        client.post("/token", data={"grant_type": "password", "username": "a\x00", "password": "x" * 10}),
        client.get("/sites/a%00", headers=admin_headers),
        client.get("/data_resources", params={"site_id": "\x00"}, headers=admin_headers),
        client.post("/sites", json={"id": "site-x", "name": "X\x00"}, headers=admin_headers),
        client.post(
            "/sites",
            content=b'{"id": "site-y", "name": "\\udc00"}',
            headers={**admin_headers, "Content-Type": "application/json"},
        ),
    ]
    for response in answers:
        assert response.status_code == 422, response.text
        assert "NUL" in response.json()["detail"]
    # Nothing was half-written, and the connection still serves requests.
    assert client.get("/sites", headers=admin_headers).json()["resources"] == []


def test_refused_passwords_are_not_echoed(client, admin_headers):
    response = client.post("/users", json={"username": "bob", "password": "Zq9#k"}, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]
    assert "Zq9#k" not in response.text
    huge = client.post("/sites", json={"id": "s", "name": "n" * 5000}, headers=admin_headers)
    assert huge.status_code == 422
    assert len(huge.text) < 2000


def test_flags_and_sizes_take_json_types_only(client, admin_headers):
    response = client.post(
        "/users", json={"username": "bob", "password": "password123", "admin": "yes"}, headers=admin_headers
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "admin"]


def test_openapi_documents_error_answers(client):
    spec = client.get("/openapi.json").json()
    answers = spec["paths"]["/jobs/{job_id}:claim"]["post"]["responses"]
    assert {"401", "403", "404", "409", "422", "503"} <= set(answers)
    # Sites (client credentials) and people (password) both get their token at /token.
    flows = spec["components"]["securitySchemes"]["OAuth2"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == flows["password"]["tokenUrl"] == "token"
