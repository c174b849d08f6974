"""Every list: keyset pages with `max_page_size` and `page_token`, stable while rows are added."""

from __future__ import annotations

import pytest

from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store import data_resources as data_resources_store
from nmdc_runtime.store.pages import encode_page_token, page_scope
from tests.integration.builders import create_job, create_workflow, error_locations, register


def _walk(client, path, headers, size, **params):
    """Every item of a list, page by page, and the number of pages."""
    items, token, pages = [], None, 0
    while True:
        query = {"max_page_size": size, **params, **({"page_token": token} if token else {})}
        response = client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"resources", "next_page_token"}
        assert len(body["resources"]) <= size
        items += body["resources"]
        pages += 1
        token = body["next_page_token"]
        if token is None:
            return items, pages


def _bulk_data_resources(database, count: int, site_id: str = "site-d") -> list[str]:
    with database.session() as session:
        if session.get(accounts_store.Site, site_id) is None:
            accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=[])
        return [
            data_resources_store.create_data_resource(
                session,
                site_id=site_id,
                name=f"r{i}",
                url=f"https://d.example/r{i}",
                data_type="fastq",
                size=i,
                checksums=[],
            ).id
            for i in range(count)
        ]


@pytest.fixture
def five_of_each(client, admin_headers, site_headers):
    """Five of everything listed: sites, data resources, workflows and jobs."""
    site = site_headers("site-0")
    for i in range(1, 5):
        client.post("/sites", json={"id": f"site-{i}"}, headers=admin_headers)
    drs = [register(client, site, name=f"r{i}")["id"] for i in range(5)]
    for i in range(5):
        create_workflow(client, admin_headers, workflow_id=f"wf-{i}")
    for i in range(5):
        create_job(client, admin_headers, "wf-0", [drs[i]])
    return site


@pytest.mark.parametrize("path", ["/sites", "/data_resources", "/workflows", "/jobs"])
def test_pages_cover_every_item_once_in_creation_order(client, admin_headers, five_of_each, path):
    everything = client.get(path, params={"max_page_size": 1000}, headers=admin_headers).json()
    assert len(everything["resources"]) == 5 and everything["next_page_token"] is None
    for size in (1, 2, 5, 6):
        items, pages = _walk(client, path, admin_headers, size)
        assert items == everything["resources"], size
        # A full last page ends the list itself: no empty page follows it.
        assert pages == -(-5 // size), size


def test_default_page_size_is_20(client, clean_database, admin_headers):
    _bulk_data_resources(clean_database, 21)
    first = client.get("/data_resources", headers=admin_headers).json()
    assert len(first["resources"]) == 20 and first["next_page_token"]
    rest = client.get(
        "/data_resources", params={"page_token": first["next_page_token"]}, headers=admin_headers
    )
    assert len(rest.json()["resources"]) == 1 and rest.json()["next_page_token"] is None


def test_page_size_over_1000_is_clamped(client, clean_database, admin_headers):
    _bulk_data_resources(clean_database, 1001)
    first = client.get("/data_resources", params={"max_page_size": 5000}, headers=admin_headers)
    assert first.status_code == 200
    assert len(first.json()["resources"]) == 1000
    token = first.json()["next_page_token"]
    assert token is not None
    last = client.get(
        "/data_resources", params={"max_page_size": 5000, "page_token": token}, headers=admin_headers
    )
    assert [r["name"] for r in last.json()["resources"]] == ["r1000"]
    assert last.json()["next_page_token"] is None


def test_pages_are_stable_while_rows_are_added(client, clean_database, admin_headers):
    before = _bulk_data_resources(clean_database, 5)
    first = client.get("/data_resources", params={"max_page_size": 2}, headers=admin_headers).json()
    added = _bulk_data_resources(clean_database, 3)
    items, _ = _walk(client, "/data_resources", admin_headers, 2, page_token=first["next_page_token"])
    seen = [r["id"] for r in first["resources"]] + [r["id"] for r in items]
    # Nothing skipped, nothing twice; the rows added meanwhile come after the ones that were there.
    assert seen == before + added


def test_page_tokens_are_reusable(client, clean_database, admin_headers):
    _bulk_data_resources(clean_database, 5)
    token = client.get("/data_resources", params={"max_page_size": 2}, headers=admin_headers).json()[
        "next_page_token"
    ]
    again = [
        client.get(
            "/data_resources", params={"max_page_size": 2, "page_token": token}, headers=admin_headers
        ).json()
        for _ in range(2)
    ]
    assert again[0] == again[1]
    assert [r["name"] for r in again[0]["resources"]] == ["r2", "r3"]


def test_a_token_keeps_its_filter_meaning(client, clean_database, admin_headers):
    ids = _bulk_data_resources(clean_database, 3, "site-d") + _bulk_data_resources(
        clean_database, 3, "site-x"
    )
    items, pages = _walk(client, "/data_resources", admin_headers, 2, site_id="site-x")
    assert [r["id"] for r in items] == ids[3:] and pages == 2


@pytest.mark.parametrize("path", ["/sites", "/data_resources", "/workflows", "/jobs"])
def test_bad_page_tokens_are_422(client, admin_headers, path):
    for token in (
        "not-a-token",
        "e30",
        encode_page_token(1)[:-2] + "!!",
        encode_page_token(1)[::-1],
        "x" * 600,
    ):
        response = client.get(path, params={"page_token": token}, headers=admin_headers)
        assert ("query", "page_token") in error_locations(response), token
    # An empty token is the same as none: the first page.
    assert client.get(path, params={"page_token": ""}, headers=admin_headers).status_code == 200


def test_bad_page_sizes_are_422(client, admin_headers):
    for size in ("0", "-1", "ten", "1.5"):
        response = client.get("/data_resources", params={"max_page_size": size}, headers=admin_headers)
        assert ("query", "max_page_size") in error_locations(response), size


def test_token_past_the_end_gives_an_empty_last_page(client, admin_headers):
    response = client.get(
        "/workflows",
        params={"page_token": encode_page_token(10**12, page_scope("/workflows", []))},
        headers=admin_headers,
    )
    assert response.json() == {"resources": [], "next_page_token": None}


def _first_token(client, headers, path="/data_resources", **params) -> str:
    body = client.get(path, params={"max_page_size": 2, **params}, headers=headers).json()
    assert body["next_page_token"], body
    return body["next_page_token"]


@pytest.mark.parametrize("path", ["/sites", "/workflows", "/jobs", "/operations", "/jobs/job-x/executions"])
def test_a_token_from_another_list_is_422(client, clean_database, admin_headers, path):
    _bulk_data_resources(clean_database, 3)
    # Taken as it is, this token would start /sites etc. after the second data resource's position.
    token = _first_token(client, admin_headers)
    response = client.get(path, params={"page_token": token}, headers=admin_headers)
    assert response.status_code == 422
    assert ("query", "page_token") in error_locations(response)


def test_a_token_with_other_filters_is_422(client, clean_database, admin_headers):
    _bulk_data_resources(clean_database, 3, "site-d")
    _bulk_data_resources(clean_database, 3, "site-x")
    token = _first_token(client, admin_headers, site_id="site-d")
    for params in ({}, {"site_id": "site-x"}, {"site_id": "site-d", "data_type": "fastq"}):
        response = client.get(
            "/data_resources",
            params={"max_page_size": 2, "page_token": token, **params},
            headers=admin_headers,
        )
        assert ("query", "page_token") in error_locations(response), params
    # The same filters, in another order and with another page size: the same list, so the token holds.
    _bulk_data_resources(clean_database, 1, "site-d")
    for _ in range(2):
        response = client.get(
            "/data_resources",
            params={"page_token": token, "max_page_size": 3, "site_id": "site-d"},
            headers=admin_headers,
        )
        assert response.status_code == 200, response.text
        assert [r["name"] for r in response.json()["resources"]] == ["r2", "r0"]


def test_page_size_may_change_between_pages(client, clean_database, admin_headers):
    ids = _bulk_data_resources(clean_database, 7)
    seen, token = [], None
    for size in (2, 1, 3, 1000):
        query = {"max_page_size": size, **({"page_token": token} if token else {})}
        body = client.get("/data_resources", params=query, headers=admin_headers).json()
        seen += [r["id"] for r in body["resources"]]
        token = body["next_page_token"]
    assert seen == ids and token is None


def test_tokens_of_the_old_unscoped_format_are_422(client, admin_headers):
    import base64

    old = base64.urlsafe_b64encode(b'{"v":1,"after":1}').decode().rstrip("=")
    response = client.get("/data_resources", params={"page_token": old}, headers=admin_headers)
    assert ("query", "page_token") in error_locations(response)


def _list_paths(app) -> list[str]:
    """Every list the API has (its GET operations answering a Page, from the OpenAPI), with a dummy id in any
    path parameter."""
    paths = []
    for path, operations in app.openapi()["paths"].items():
        answer = operations.get("get", {}).get("responses", {}).get("200", {})
        schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
        if schema.get("$ref", "").startswith("#/components/schemas/Page_"):
            paths.append(path.replace("{job_id}", "job-x"))
    return paths


def test_every_list_refuses_unknown_query_parameters_and_names_them(client, admin_headers):
    paths = _list_paths(client.app)
    assert len(paths) >= 6, paths
    for path in paths:
        response = client.get(path, params={"filter": "x", "status2": "y"}, headers=admin_headers)
        assert response.status_code == 422, (path, response.text)
        assert error_locations(response) == [("query", "filter"), ("query", "status2")], path
        # Known parameters still pass, alone or beside paging.
        assert client.get(path, params={"max_page_size": 5}, headers=admin_headers).status_code in (200, 404)


def test_a_mistyped_filter_no_longer_answers_with_everything(client, admin_headers, five_of_each):
    response = client.get("/jobs", params={"workflow": "wf-1"}, headers=admin_headers)
    assert response.status_code == 422
    assert "workflow" in response.text
    assert (
        client.get("/jobs", params={"workflow_id": "wf-1"}, headers=admin_headers).json()["resources"] == []
    )
