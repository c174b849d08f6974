"""Workflows: made and changed by admins, read by anyone."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.integration.builders import create_workflow, error_locations, make_user_headers, workflow_body
from tests.integration.test_sites_users import RFC3339_UTC


def test_admin_creates_a_workflow(client, admin_headers):
    body = workflow_body(required_capabilities=["gpu", "metagenome-assembly"])
    response = client.post("/workflows", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    workflow = response.json()
    for field, value in body.items():
        assert workflow[field] == value, field
    assert RFC3339_UTC.match(workflow["created_at"]) and RFC3339_UTC.match(workflow["updated_at"])


def test_defaults_fill_optional_fields(client, admin_headers):
    body = {"id": "wf", "name": "wf", "version": "1"}
    workflow = client.post("/workflows", json=body, headers=admin_headers).json()
    assert workflow["data_types"] == [] and workflow["required_capabilities"] == []
    assert workflow["config"] == {} and workflow["enabled"] is True


def test_existing_workflow_id_is_409(client, admin_headers):
    create_workflow(client, admin_headers)
    response = client.post("/workflows", json=workflow_body(version="2"), headers=admin_headers)
    assert response.status_code == 409
    assert client.get("/workflows/assembly", headers=admin_headers).json()["version"] == "1.0.0"


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        ({"id": "bad id"}, ("body", "id")),
        ({"name": ""}, ("body", "name")),
        ({"version": ""}, ("body", "version")),
        ({"version": "v" * 65}, ("body", "version")),
        ({"data_types": "fastq"}, ("body", "data_types")),
        ({"data_types": ["ok", "not ok"]}, ("body", "data_types", 1)),
        ({"required_capabilities": ["x"] * 65}, ("body", "required_capabilities")),
        ({"config": [1, 2]}, ("body", "config")),
        ({"enabled": "sometimes"}, ("body", "enabled")),
        ({"enabled": "false"}, ("body", "enabled")),
        # Jobs fill in `data_resources` themselves.
        ({"config": {"data_resources": []}}, ("body", "config")),
        ({"owner": "me"}, ("body", "owner")),
    ],
)
def test_invalid_workflow_bodies_are_422_naming_the_field(client, admin_headers, overrides, location):
    response = client.post("/workflows", json=workflow_body(**overrides), headers=admin_headers)
    assert location in error_locations(response)


def test_only_admins_create_and_change_workflows(client, admin_headers, site_headers, clean_database):
    create_workflow(client, admin_headers)
    site = site_headers("site-e")
    plain = make_user_headers(client, clean_database, "plain")
    site_admin = make_user_headers(client, clean_database, "e-admin", site_admin_of=["site-e"])
    body = workflow_body("other")
    assert client.post("/workflows", json=body).status_code == 401
    assert client.patch("/workflows/assembly", json={"enabled": False}).status_code == 401
    for headers in (site, plain, site_admin):
        assert client.post("/workflows", json=body, headers=headers).status_code == 403
        assert (
            client.patch("/workflows/assembly", json={"enabled": False}, headers=headers).status_code == 403
        )
    assert client.get("/workflows/assembly", headers=site).json()["enabled"] is True


def test_anyone_lists_and_reads_workflows(client, admin_headers, site_headers):
    first = create_workflow(client, admin_headers, workflow_id="a")
    second = create_workflow(client, admin_headers, workflow_id="b")
    site = site_headers("site-e")
    page = client.get("/workflows", headers=site).json()
    assert page == {"resources": [first, second], "next_page_token": None}
    assert client.get("/workflows/b", headers=site).json() == second
    assert client.get("/workflows").status_code == 401


def test_unknown_workflow_is_404(client, admin_headers):
    assert client.get("/workflows/nope", headers=admin_headers).status_code == 404
    assert client.patch("/workflows/nope", json={"enabled": False}, headers=admin_headers).status_code == 404


def test_patch_changes_only_the_fields_sent(client, admin_headers):
    before = create_workflow(client, admin_headers)
    response = client.patch("/workflows/assembly", json={"enabled": False}, headers=admin_headers)
    assert response.status_code == 200, response.text
    after = response.json()
    assert after["enabled"] is False
    assert datetime.fromisoformat(after["updated_at"]) > datetime.fromisoformat(before["updated_at"])
    unchanged = {k: v for k, v in before.items() if k not in ("enabled", "updated_at")}
    assert {k: after[k] for k in unchanged} == unchanged
    assert client.get("/workflows/assembly", headers=admin_headers).json() == after


def test_patch_every_updatable_field(client, admin_headers):
    create_workflow(client, admin_headers)
    changes = {
        "name": "Assembly v2",
        "version": "2.0.0",
        "data_types": ["fastq", "fasta"],
        "required_capabilities": ["gpu"],
        "config": {"threads": 16},
        "enabled": False,
    }
    after = client.patch("/workflows/assembly", json=changes, headers=admin_headers).json()
    assert after["data_types"] == ["fasta", "fastq"]
    assert {k: after[k] for k in changes if k != "data_types"} == {
        k: v for k, v in changes.items() if k != "data_types"
    }


def test_empty_patch_changes_nothing_but_is_accepted(client, admin_headers):
    before = create_workflow(client, admin_headers)
    after = client.patch("/workflows/assembly", json={}, headers=admin_headers).json()
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"enabled": None}, ("body", "enabled")),
        ({"name": None}, ("body", "name")),
        ({"id": "renamed"}, ("body", "id")),
        ({"created_at": "2020-01-01T00:00:00Z"}, ("body", "created_at")),
        ({"data_types": ["no spaces please"]}, ("body", "data_types", 0)),
        ({"config": {"data_resources": [{"id": "x"}]}}, ("body", "config")),
    ],
)
def test_invalid_patches_are_422_naming_the_field(client, admin_headers, body, location):
    create_workflow(client, admin_headers)
    response = client.patch("/workflows/assembly", json=body, headers=admin_headers)
    assert location in error_locations(response)
