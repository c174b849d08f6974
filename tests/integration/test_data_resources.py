"""`POST /data_resources` by the hosting site, its validation, and reading data resources back."""

from __future__ import annotations

import pytest

from tests.integration.builders import data_resource_body, error_locations, make_user_headers, register
from tests.integration.test_sites_users import RFC3339_UTC


def test_site_registers_a_data_resource_of_its_own(client, site_headers):
    site = site_headers("site-d")
    body = data_resource_body()
    response = client.post("/data_resources", json=body, headers=site)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["site_id"] == "site-d"
    assert created["id"].startswith("dr-")
    assert RFC3339_UTC.match(created["created_at"])
    for field in ("name", "url", "data_type", "size", "checksums", "description"):
        assert created[field] == body[field], field


def test_description_is_optional(client, site_headers):
    body = data_resource_body()
    del body["description"]
    response = client.post("/data_resources", json=body, headers=site_headers("site-d"))
    assert response.status_code == 201
    assert response.json()["description"] is None


def test_site_id_is_never_taken_from_the_body(client, site_headers):
    site_headers("site-e")
    response = client.post(
        "/data_resources", json=data_resource_body(site_id="site-e"), headers=site_headers("site-d")
    )
    assert ("body", "site_id") in error_locations(response)


def test_checksums_are_stored_as_lowercase_hex(client, site_headers):
    checksum = "ABCDEF0123456789" * 4
    created = register(client, site_headers("site-d"), checksums=[{"type": "sha256", "checksum": checksum}])
    assert created["checksums"] == [{"type": "sha256", "checksum": checksum.lower()}]


def test_both_checksum_types_together(client, site_headers):
    checksums = [{"type": "md5", "checksum": "0" * 32}, {"type": "sha256", "checksum": "f" * 64}]
    assert register(client, site_headers("site-d"), checksums=checksums)["checksums"] == checksums


def test_only_site_clients_register(client, admin_headers, clean_database):
    plain = make_user_headers(client, clean_database, "plain")
    body = data_resource_body()
    assert client.post("/data_resources", json=body).status_code == 401
    assert client.post("/data_resources", json=body, headers=plain).status_code == 403
    assert client.post("/data_resources", json=body, headers=admin_headers).status_code == 403


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        ({"url": "ftp://data.example.org/a"}, ("body", "url")),
        ({"url": "file:///etc/passwd"}, ("body", "url")),
        ({"url": "javascript:alert(1)"}, ("body", "url")),
        ({"url": "not a url"}, ("body", "url")),
        ({"url": "https://"}, ("body", "url")),
        ({"url": "https://example.org:99999/a"}, ("body", "url")),
        ({"url": "https://example.org/" + "a" * 2048}, ("body", "url")),
        ({"size": -1}, ("body", "size")),
        ({"size": 2**63}, ("body", "size")),
        ({"size": "big"}, ("body", "size")),
        ({"size": 1.5}, ("body", "size")),
        ({"checksums": [{"type": "sha256", "checksum": "ab" * 16}]}, ("body", "checksums", 0, "checksum")),
        ({"checksums": [{"type": "md5", "checksum": "ab" * 32}]}, ("body", "checksums", 0, "checksum")),
        ({"checksums": [{"type": "sha256", "checksum": "g" * 64}]}, ("body", "checksums", 0, "checksum")),
        ({"checksums": [{"type": "sha1", "checksum": "a" * 40}]}, ("body", "checksums", 0, "type")),
        ({"checksums": [{"type": "md5", "checksum": "a" * 32, "x": 1}]}, ("body", "checksums", 0, "x")),
        ({"checksums": [{"type": "md5", "checksum": "a" * 32}] * 2}, ("body", "checksums")),
        ({"checksums": [{"type": "md5", "checksum": "a" * 32}] * 9}, ("body", "checksums")),
        ({"checksums": None}, ("body", "checksums")),
        ({"name": ""}, ("body", "name")),
        ({"name": "n" * 257}, ("body", "name")),
        ({"description": "d" * 4097}, ("body", "description")),
        ({"data_type": "has space"}, ("body", "data_type")),
        ({"data_type": "t" * 65}, ("body", "data_type")),
        ({"owner": "someone"}, ("body", "owner")),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(client, site_headers, overrides, location):
    response = client.post("/data_resources", json=data_resource_body(**overrides), headers=site_headers("d"))
    assert location in error_locations(response)


def test_missing_fields_are_422_naming_them(client, site_headers):
    response = client.post("/data_resources", json={"name": "a"}, headers=site_headers("site-d"))
    locations = error_locations(response)
    for field in ("url", "data_type", "size", "checksums"):
        assert ("body", field) in locations


def test_not_json_is_422(client, site_headers):
    response = client.post(
        "/data_resources",
        content=b"{not json",
        headers={**site_headers("site-d"), "Content-Type": "application/json"},
    )
    assert response.status_code == 422


def test_anyone_reads_a_data_resource(client, site_headers, clean_database):
    created = register(client, site_headers("site-d"))
    plain = make_user_headers(client, clean_database, "plain")
    response = client.get(f"/data_resources/{created['id']}", headers=plain)
    assert response.status_code == 200
    assert response.json() == created
    assert client.get(f"/data_resources/{created['id']}").status_code == 401


def test_unknown_data_resource_is_404(client, admin_headers):
    response = client.get("/data_resources/dr-nope", headers=admin_headers)
    assert response.status_code == 404
    assert "dr-nope" in response.json()["detail"]


def test_list_filters_by_site_and_data_type(client, site_headers, admin_headers):
    site_d, site_x = site_headers("site-d"), site_headers("site-x")
    a = register(client, site_d, name="a", data_type="fastq")
    b = register(client, site_d, name="b", data_type="bam")
    c = register(client, site_x, name="c", data_type="fastq")

    def ids(**params):
        response = client.get("/data_resources", params=params, headers=admin_headers)
        assert response.status_code == 200, response.text
        assert response.json()["next_page_token"] is None
        return [item["id"] for item in response.json()["resources"]]

    assert ids() == [a["id"], b["id"], c["id"]]
    assert ids(site_id="site-d") == [a["id"], b["id"]]
    assert ids(data_type="fastq") == [a["id"], c["id"]]
    assert ids(site_id="site-d", data_type="fastq") == [a["id"]]
    assert ids(site_id="nope") == []
    listed = client.get("/data_resources", params={"site_id": "site-x"}, headers=admin_headers).json()
    assert listed["resources"] == [c]
