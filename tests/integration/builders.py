"""Bodies and callers the resource tests share: valid requests to vary, and users with tokens."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi.testclient import TestClient

from nmdc_runtime.db import Database
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.services import accounts as accounts_service
from tests.integration.conftest import bearer

USER_PASSWORD = "user-password-123"

SERVICE_POLICY = Policy(
    claim_lease_seconds=60,
    max_lease_seconds=86400,
    operation_retention_seconds=3600,
    idempotency_retention_seconds=3600,
    max_attempts=2,
)
"""The policy of the tests that call the services directly: 60 s claims, two attempts, an hour's retention."""


def data_resource_body(name: str = "reads.fastq.gz", **overrides: Any) -> dict[str, Any]:
    """A valid `POST /data_resources` body."""
    body = {
        "name": name,
        "url": f"https://data.example.org/{name}",
        "data_type": "fastq",
        "size": 1234,
        "checksums": [{"type": "sha256", "checksum": hashlib.sha256(name.encode()).hexdigest()}],
        "description": "paired-end reads",
    }
    body.update(overrides)
    return body


def workflow_body(workflow_id: str = "assembly", **overrides: Any) -> dict[str, Any]:
    """A valid `POST /workflows` body."""
    body = {
        "id": workflow_id,
        "name": "Metagenome assembly",
        "version": "1.0.0",
        "data_types": ["fastq"],
        "required_capabilities": [],
        "config": {"threads": 8, "memory": "64G"},
        "enabled": True,
    }
    body.update(overrides)
    return body


def make_user_headers(
    client: TestClient, database: Database, username: str, *, admin: bool = False, site_admin_of=()
) -> dict[str, str]:
    """Create a user through the store and return the auth headers of its token."""
    with database.session() as session:
        accounts_service.create_user(
            session,
            username=username,
            password=USER_PASSWORD,
            admin=admin,
            site_admin_of=list(site_admin_of),
            actor="tests",
        )
    return bearer(client, grant_type="password", username=username, password=USER_PASSWORD)


def register(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    """POST a data resource and return the created one."""
    response = client.post("/data_resources", json=data_resource_body(**body), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def create_workflow(client: TestClient, admin_headers: dict[str, str], **body: Any) -> dict[str, Any]:
    """POST a workflow and return it."""
    response = client.post("/workflows", json=workflow_body(**body), headers=admin_headers)
    assert response.status_code == 201, response.text
    return response.json()


def create_job(client: TestClient, admin_headers: dict[str, str], workflow_id: str, ids: list[str], **extra):
    """POST a job by hand and return it."""
    body = {"workflow_id": workflow_id, "data_resource_ids": ids, **extra}
    response = client.post("/jobs", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    return response.json()


def error_locations(response) -> list[tuple]:
    """The `loc` of each error in a 422 answer, as tuples."""
    assert response.status_code == 422, response.text
    return [tuple(error["loc"]) for error in response.json()["detail"]]
