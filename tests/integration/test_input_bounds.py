"""Bounded input on every route that takes JSON: a body nested deeper than `MAX_JSON_DEPTH`, or not UTF-8,
is a 422 naming the field, not a 500 or an undocumented 400."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa

from nmdc_runtime.models import Execution
from nmdc_runtime.schemas.common import MAX_JSON_DEPTH
from tests.integration.claim_world import claimed, execution_body, make_world


@pytest.fixture
def world(client, clean_database, admin_headers, settings):
    return make_world(client, clean_database, admin_headers, settings)


def json_routes(client) -> list[tuple[str, str]]:
    """(method, path) of every operation whose body is JSON, path parameters filled with a dummy id."""
    paths = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "x-1", path))
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]


def deep_object(levels: int) -> str:
    """The JSON text of an object `levels` levels deep."""
    return '{"a": ' * (levels - 1) + "{}" + "}" * (levels - 1)


def test_every_json_route_refuses_deep_nesting_and_names_the_field(client, admin_headers):
    routes = json_routes(client)
    assert len(routes) >= 10
    # What the issue sent: about 300 levels, a 500 then.
    body = '{"details": ' + deep_object(299) + "}"
    for method, path in routes:
        response = client.request(
            method, path, content=body, headers={**admin_headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["detail"] == [
            {
                "loc": ["body", "details"],
                "msg": f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
                "type": "json_too_deep",
            }
        ]


def test_every_json_route_refuses_a_body_it_cannot_read_with_a_documented_422(client, admin_headers):
    # Not UTF-8 (with and without a Content-Type, which the framework then reads as JSON too); and valid JSON
    # whose integer is longer than the parser reads. Both were undocumented 400s.
    bodies = [b'{"name": "caf\xe9"}', b'{"size": 1' + b"0" * 5000 + b"}"]
    for method, path in json_routes(client):
        for body in bodies:
            for content_type in ("application/json", None):
                headers = {**admin_headers, **({"Content-Type": content_type} if content_type else {})}
                response = client.request(method, path, content=body, headers=headers)
                assert response.status_code == 422, (method, path, content_type, response.text)
                assert response.json()["detail"][0]["loc"] == ["body"]
                assert response.json()["detail"][0]["type"] == "json_invalid"


def test_a_deep_execution_is_refused_and_nothing_is_kept(world):
    op = claimed(world)
    url = f"/jobs/{op['metadata']['job_id']}/executions"
    # One level too many: the body is level 1, its details level 2.
    text = json.dumps(execution_body(op["id"], details="DEEP")).replace('"DEEP"', deep_object(MAX_JSON_DEPTH))
    response = world.client.post(
        url, content=text, headers={**world.site_e, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "details"]
    with world.database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 0


def test_a_body_at_the_bound_is_accepted_and_kept_whole(world):
    config = {}
    for _ in range(MAX_JSON_DEPTH - 2):
        config = {"a": config}
    body = {"id": "deep", "name": "deep", "version": "1", "data_types": ["fastq"], "config": config}
    response = world.client.post("/workflows", json=body, headers=world.admin)
    assert response.status_code == 201, response.text
    assert world.client.get("/workflows/deep", headers=world.admin).json()["config"] == config
    body["id"], body["config"] = "deeper", {"a": config}
    response = world.client.post("/workflows", json=body, headers=world.admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "config"]
