"""A small world for the claim, operation and execution tests: sites, an admin, a user, workflows and jobs,
all made through the API (or the store for accounts), plus the bodies those tests send."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from nmdc_runtime.auth import issue_token
from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.store import accounts as accounts_store

_names = itertools.count()


@dataclass
class World:
    """Callers: D hosts data, E and F execute (E and F have `gpu`), an admin and a plain user."""

    client: TestClient
    database: Database
    admin: dict[str, str]
    user: dict[str, str]
    site_d: dict[str, str]
    site_e: dict[str, str]
    site_f: dict[str, str]


def headers_for(settings: Settings, principal: Principal) -> dict[str, str]:
    """Authorization headers with a token signed for `principal`, as POST /token would issue it.

    Signing directly skips the deliberately slow secret hashing; tests of POST /token itself live elsewhere.
    """
    token = issue_token(principal, key=settings.jwt_key(), expires_in=3600)
    return {"Authorization": f"Bearer {token}"}


def site_principal(site_id: str) -> Principal:
    """The principal of a site client of `site_id`."""
    return Principal(kind="site_client", name=f"sc-test-{site_id}", site_id=site_id)


def make_world(
    client: TestClient, database: Database, admin_headers: dict[str, str], settings: Settings
) -> World:
    """Sites D, E, F with tokens, a plain user, and a workflow `wf` on `fastq` needing nothing special."""
    with database.session() as session:
        accounts_store.create_site(session, site_id="site-d", name="Site D", capabilities=[])
        accounts_store.create_site(session, site_id="site-e", name="Site E", capabilities=["gpu"])
        accounts_store.create_site(session, site_id="site-f", name="Site F", capabilities=["gpu"])
    world = World(
        client=client,
        database=database,
        admin=admin_headers,
        user=headers_for(settings, Principal(kind="user", name="plain")),
        site_d=headers_for(settings, site_principal("site-d")),
        site_e=headers_for(settings, site_principal("site-e")),
        site_f=headers_for(settings, site_principal("site-f")),
    )
    create_workflow(world, "wf")
    return world


def create_workflow(world: World, workflow_id: str, required: list[str] = (), **extra: Any) -> dict[str, Any]:
    """POST a workflow (admin); `extra` adds fields (e.g. `lease_seconds`)."""
    body = {
        "id": workflow_id,
        "name": workflow_id,
        "version": "1.0",
        "data_types": ["fastq"],
        "required_capabilities": list(required),
        "config": {"threads": 4},
        "enabled": True,
        **extra,
    }
    response = world.client.post("/workflows", json=body, headers=world.admin)
    assert response.status_code == 201, response.text
    return response.json()


def data_resource_body(name: str | None = None, data_type: str = "fastq") -> dict[str, Any]:
    """A valid data resource body (for POST /data_resources or an execution's outputs)."""
    name = name or f"file-{next(_names)}.fastq"
    return {
        "name": name,
        "url": f"https://data.example.org/{name}",
        "data_type": data_type,
        "size": 42,
        "checksums": [{"type": "md5", "checksum": hashlib.md5(name.encode()).hexdigest()}],
    }


def register_data(world: World, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    """POST a data resource (by site D unless told)."""
    response = world.client.post(
        "/data_resources", json=data_resource_body(**body), headers=headers or world.site_d
    )
    assert response.status_code == 201, response.text
    return response.json()


def new_job(
    world: World, workflow_id: str = "wf", data_resource_ids: list[str] | None = None
) -> dict[str, Any]:
    """POST a job by hand (admin) over a fresh data resource of site D unless told."""
    ids = data_resource_ids if data_resource_ids is not None else [register_data(world)["id"]]
    response = world.client.post(
        "/jobs", json={"workflow_id": workflow_id, "data_resource_ids": ids}, headers=world.admin
    )
    assert response.status_code == 201, response.text
    return response.json()


def claim(client: TestClient, headers: dict[str, str], job_id: str, **body: Any):
    """POST /jobs/{job_id}:claim (with a JSON body when `body` names fields, e.g. `lease_seconds`)."""
    return client.post(f"/jobs/{job_id}:claim", headers=headers, json=body or None)


def claimed(world: World, headers: dict[str, str] | None = None, job: dict | None = None) -> dict[str, Any]:
    """A new job claimed (by site E unless told): the operation."""
    job = job or new_job(world)
    response = claim(world.client, headers or world.site_e, job["id"])
    assert response.status_code == 201, response.text
    return response.json()


def execution_body(operation_id: str, *, status: str = "succeeded", outputs: int = 1, **extra: Any) -> dict:
    """A valid POST /jobs/{id}/executions body with `outputs` fresh output data resources."""
    ended = datetime.now(UTC)
    body = {
        "operation_id": operation_id,
        "status": status,
        "started_at": (ended - timedelta(minutes=3)).isoformat(),
        "ended_at": ended.isoformat(),
        "outputs": [data_resource_body(data_type="contigs") for _ in range(outputs)],
        "details": {"exit_code": 0},
    }
    body.update(extra)
    return body


def post_execution(world: World, op: dict, headers: dict[str, str] | None = None, **body: Any):
    """POST an execution for an operation's job (by site E unless told)."""
    return world.client.post(
        f"/jobs/{op['metadata']['job_id']}/executions",
        json=execution_body(op["id"], **body),
        headers=headers or world.site_e,
    )


def finish_with_result(world: World, op: dict, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Post a succeeded execution and finish the operation with it; the finished operation."""
    headers = headers or world.site_e
    execution = post_execution(world, op, headers)
    assert execution.status_code == 201, execution.text
    response = world.client.patch(
        f"/operations/{op['id']}",
        json={"done": True, "result": {"execution_id": execution.json()["id"]}},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


def job_of(world: World, op: dict) -> dict[str, Any]:
    """GET the operation's job."""
    response = world.client.get(f"/jobs/{op['metadata']['job_id']}", headers=world.admin)
    assert response.status_code == 200, response.text
    return response.json()


def operation(world: World, op_id: str) -> dict[str, Any]:
    """GET an operation."""
    response = world.client.get(f"/operations/{op_id}", headers=world.admin)
    assert response.status_code == 200, response.text
    return response.json()
