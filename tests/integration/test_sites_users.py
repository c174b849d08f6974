"""Sites, their credentials, users and `GET /users/me`, with who may do what."""

from __future__ import annotations

import re

import pytest

from tests.integration.builders import error_locations, make_user_headers

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SITE = {"id": "site-e", "name": "Site E", "capabilities": ["gpu", "metagenome-assembly"]}


def test_admin_creates_a_site_and_sees_no_secret(client, admin_headers):
    response = client.post("/sites", json=SITE, headers=admin_headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "name", "capabilities", "disabled_at", "drained", "created_at"}
    assert body["disabled_at"] is None
    assert body["id"] == "site-e" and body["name"] == "Site E"
    assert body["capabilities"] == ["gpu", "metagenome-assembly"]
    assert RFC3339_UTC.match(body["created_at"]), body["created_at"]


def test_site_name_defaults_to_its_id(client, admin_headers):
    response = client.post("/sites", json={"id": "site-x"}, headers=admin_headers)
    assert response.status_code == 201
    assert response.json()["name"] == "site-x"
    assert response.json()["capabilities"] == []


def test_existing_site_id_is_409(client, admin_headers):
    assert client.post("/sites", json=SITE, headers=admin_headers).status_code == 201
    response = client.post("/sites", json={**SITE, "name": "again"}, headers=admin_headers)
    assert response.status_code == 409
    assert "site-e" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "has space"}, "id"),
        ({"id": "a/b"}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"id": "ok", "capabilities": ["no spaces"]}, "capabilities"),
        ({"id": "ok", "name": "n" * 257}, "name"),
        ({"id": "ok", "secret": "x"}, "secret"),
    ],
)
def test_invalid_site_bodies_are_422_naming_the_field(client, admin_headers, body, field):
    locations = error_locations(client.post("/sites", json=body, headers=admin_headers))
    assert any(field in loc for loc in locations), locations


def test_only_admins_create_sites(client, admin_headers, site_headers, clean_database):
    client.post("/sites", json=SITE, headers=admin_headers)
    site = site_headers("site-d")
    user = make_user_headers(client, clean_database, "plain")
    site_admin = make_user_headers(client, clean_database, "e-admin", site_admin_of=["site-e"])
    body = {"id": "new-site"}
    assert client.post("/sites", json=body).status_code == 401
    for headers in (site, user, site_admin):
        assert client.post("/sites", json=body, headers=headers).status_code == 403
    assert client.get("/sites/new-site", headers=admin_headers).status_code == 404


def test_any_caller_lists_and_reads_sites(client, admin_headers, site_headers, clean_database):
    client.post("/sites", json=SITE, headers=admin_headers)
    site = site_headers("site-d", ["storage"])
    listed = client.get("/sites", headers=site)
    assert listed.status_code == 200
    page = listed.json()
    assert [s["id"] for s in page["resources"]] == ["site-e", "site-d"]
    assert page["next_page_token"] is None
    one = client.get("/sites/site-d", headers=site).json()
    assert one == page["resources"][1]
    assert set(one) == {"id", "name", "capabilities", "disabled_at", "drained", "created_at"}
    assert one["drained"] is None
    assert client.get("/sites").status_code == 401


def test_unknown_site_is_404(client, admin_headers):
    response = client.get("/sites/nope", headers=admin_headers)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def test_admin_generates_credentials_that_work(client, admin_headers):
    client.post("/sites", json=SITE, headers=admin_headers)
    response = client.post("/sites/site-e:generateCredentials", headers=admin_headers)
    assert response.status_code == 201, response.text
    creds = response.json()
    assert set(creds) == {"client_id", "client_secret"}
    token = client.post("/token", data={"grant_type": "client_credentials", **creds})
    assert token.status_code == 200
    me = client.get("/users/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert me.json() == {
        "kind": "site_client",
        "client_id": creds["client_id"],
        "site_id": "site-e",
        "admin": False,
    }
    # The secret was shown once: the site's public view never carries it.
    assert creds["client_secret"] not in client.get("/sites/site-e", headers=admin_headers).text


def test_site_admin_generates_credentials_for_its_own_site_only(client, admin_headers, clean_database):
    client.post("/sites", json=SITE, headers=admin_headers)
    client.post("/sites", json={"id": "site-d"}, headers=admin_headers)
    e_admin = make_user_headers(client, clean_database, "e-admin", site_admin_of=["site-e"])
    assert client.post("/sites/site-e:generateCredentials", headers=e_admin).status_code == 201
    assert client.post("/sites/site-d:generateCredentials", headers=e_admin).status_code == 403


def test_generate_credentials_authorization_matrix(client, admin_headers, site_headers, clean_database):
    site_e = site_headers("site-e")
    site_d = site_headers("site-d")
    plain = make_user_headers(client, clean_database, "plain")
    path = "/sites/site-e:generateCredentials"
    assert client.post(path).status_code == 401
    # A site client, even of the same site, cannot mint more credentials for itself.
    for headers in (site_e, site_d, plain):
        assert client.post(path, headers=headers).status_code == 403
    assert client.post(path, headers=admin_headers).status_code == 201


def test_generate_credentials_for_unknown_site_is_404_for_admins(client, admin_headers, clean_database):
    assert client.post("/sites/nope:generateCredentials", headers=admin_headers).status_code == 404
    plain = make_user_headers(client, clean_database, "plain")
    assert client.post("/sites/nope:generateCredentials", headers=plain).status_code == 403


def test_admin_creates_a_user_without_showing_the_password(client, admin_headers):
    client.post("/sites", json=SITE, headers=admin_headers)
    body = {"username": "alice", "password": "s3cret-password", "admin": False, "site_admin_of": ["site-e"]}
    response = client.post("/users", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["username"] == "alice" and user["admin"] is False and user["site_admin_of"] == ["site-e"]
    assert RFC3339_UTC.match(user["created_at"])
    assert "password" not in user and "s3cret-password" not in response.text
    token = client.post(
        "/token", data={"grant_type": "password", "username": "alice", "password": "s3cret-password"}
    )
    me = client.get("/users/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert me.json() == {"kind": "user", "username": "alice", "admin": False, "site_admin_of": ["site-e"]}


def test_existing_username_is_409(client, admin_headers):
    body = {"username": "alice", "password": "s3cret-password"}
    assert client.post("/users", json=body, headers=admin_headers).status_code == 201
    assert client.post("/users", json=body, headers=admin_headers).status_code == 409


def test_user_admin_of_unknown_site_is_404_and_not_created(client, admin_headers):
    body = {"username": "bob", "password": "s3cret-password", "site_admin_of": ["nope"]}
    response = client.post("/users", json=body, headers=admin_headers)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]
    body["site_admin_of"] = []
    assert client.post("/users", json=body, headers=admin_headers).status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "bob", "password": "short"}, "password"),
        ({"username": "bob b", "password": "long-enough"}, "username"),
        ({"username": "bob"}, "password"),
        ({"username": "bob", "password": "long-enough", "admin": "maybe"}, "admin"),
        ({"username": "bob", "password": "long-enough", "role": "root"}, "role"),
    ],
)
def test_invalid_user_bodies_are_422_naming_the_field(client, admin_headers, body, field):
    locations = error_locations(client.post("/users", json=body, headers=admin_headers))
    assert any(field in loc for loc in locations), locations


def test_only_admins_create_users(client, admin_headers, site_headers, clean_database):
    client.post("/sites", json=SITE, headers=admin_headers)
    site = site_headers("site-d")
    plain = make_user_headers(client, clean_database, "plain")
    site_admin = make_user_headers(client, clean_database, "e-admin", site_admin_of=["site-e"])
    body = {"username": "mallory", "password": "long-enough", "admin": True}
    assert client.post("/users", json=body).status_code == 401
    for headers in (site, plain, site_admin):
        assert client.post("/users", json=body, headers=headers).status_code == 403


def test_me_for_an_admin(client, admin_headers):
    response = client.get("/users/me", headers=admin_headers)
    assert response.status_code == 200
    assert response.json() == {"kind": "user", "username": "admin", "admin": True, "site_admin_of": []}
    assert client.get("/users/me").status_code == 401
