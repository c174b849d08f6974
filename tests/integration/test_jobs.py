"""Jobs as resources: made by hand by admins, read and filtered by anyone, `claimable` for sites."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nmdc_runtime.ids import new_id
from nmdc_runtime.models import Job, Operation
from tests.integration.builders import (
    create_job,
    create_workflow,
    error_locations,
    make_user_headers,
    register,
)
from tests.integration.test_sites_users import RFC3339_UTC


@pytest.fixture
def world(client, admin_headers, site_headers):
    """Site D with two data resources, and the `assembly` workflow."""
    site_d = site_headers("site-d")
    a = register(client, site_d, name="a.fastq")
    b = register(client, site_d, name="b.fastq")
    workflow = create_workflow(client, admin_headers, config={"threads": 8, "memory": "64G"})
    return {"site_d": site_d, "a": a, "b": b, "workflow": workflow}


def test_admin_makes_a_job_with_the_data_resources_in_full(client, admin_headers, world):
    body = {"workflow_id": "assembly", "data_resource_ids": [world["a"]["id"], world["b"]["id"]]}
    response = client.post("/jobs", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["id"].startswith("job-")
    assert job["workflow_id"] == "assembly"
    assert job["status"] == "unclaimed"
    assert (job["attempts"], job["max_attempts"]) == (0, 3)
    assert job["created_by"] == "user:admin"
    assert RFC3339_UTC.match(job["created_at"])
    assert job["config"] == {
        "threads": 8,
        "memory": "64G",
        "data_resources": [world["a"], world["b"]],
        "inputs": {},
        "group": None,
    }


def test_job_config_overrides_the_workflow_config(client, admin_headers, world):
    job = create_job(
        client, admin_headers, "assembly", [world["a"]["id"]], config={"threads": 32, "queue": "big"}
    )
    assert job["config"] == {
        "threads": 32,
        "memory": "64G",
        "queue": "big",
        "data_resources": [world["a"]],
        "inputs": {},
        "group": None,
    }


def test_job_config_is_fixed_when_the_job_is_made(client, admin_headers, world):
    job = create_job(client, admin_headers, "assembly", [world["a"]["id"]])
    client.patch("/workflows/assembly", json={"config": {"threads": 1}}, headers=admin_headers)
    assert client.get(f"/jobs/{job['id']}", headers=admin_headers).json()["config"] == job["config"]


def test_repeated_data_resource_ids_count_once(client, admin_headers, world):
    a = world["a"]["id"]
    job = create_job(client, admin_headers, "assembly", [a, a])
    assert job["config"]["data_resources"] == [world["a"]]


def test_unknown_workflow_is_404(client, admin_headers, world):
    body = {"workflow_id": "nope", "data_resource_ids": [world["a"]["id"]]}
    response = client.post("/jobs", json=body, headers=admin_headers)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def test_unknown_data_resource_is_404_naming_it_and_makes_nothing(client, admin_headers, world):
    body = {"workflow_id": "assembly", "data_resource_ids": [world["a"]["id"], "dr-missing"]}
    response = client.post("/jobs", json=body, headers=admin_headers)
    assert response.status_code == 404
    assert "dr-missing" in response.json()["detail"]
    assert client.get("/jobs", headers=admin_headers).json()["resources"] == []


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"data_resource_ids": []}, ("body", "workflow_id")),
        ({"workflow_id": "assembly"}, ("body", "data_resource_ids")),
        ({"workflow_id": "assembly", "data_resource_ids": "dr-1"}, ("body", "data_resource_ids")),
        ({"workflow_id": "assembly", "data_resource_ids": ["x"] * 1001}, ("body", "data_resource_ids")),
        ({"workflow_id": "assembly", "data_resource_ids": [], "config": []}, ("body", "config")),
        (
            {"workflow_id": "assembly", "data_resource_ids": [], "config": {"data_resources": []}},
            ("body", "config"),
        ),
        ({"workflow_id": "assembly", "data_resource_ids": [], "status": "succeeded"}, ("body", "status")),
    ],
)
def test_invalid_job_bodies_are_422_naming_the_field(client, admin_headers, world, body, location):
    assert location in error_locations(client.post("/jobs", json=body, headers=admin_headers))


def test_only_admins_make_jobs(client, admin_headers, world, clean_database):
    plain = make_user_headers(client, clean_database, "plain")
    site_admin = make_user_headers(client, clean_database, "d-admin", site_admin_of=["site-d"])
    body = {"workflow_id": "assembly", "data_resource_ids": [world["a"]["id"]]}
    assert client.post("/jobs", json=body).status_code == 401
    for headers in (world["site_d"], plain, site_admin):
        assert client.post("/jobs", json=body, headers=headers).status_code == 403
    assert client.get("/jobs", headers=admin_headers).json()["resources"] == []


def test_anyone_reads_a_job_and_unknown_is_404(client, admin_headers, world):
    job = create_job(client, admin_headers, "assembly", [world["a"]["id"]])
    response = client.get(f"/jobs/{job['id']}", headers=world["site_d"])
    assert response.status_code == 200
    assert response.json() == job
    assert client.get(f"/jobs/{job['id']}").status_code == 401
    assert client.get("/jobs/job-nope", headers=admin_headers).status_code == 404


def _set_status(database, job_id: str, status: str) -> None:
    with database.session() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(status=status))


def test_list_filters(client, admin_headers, world, clean_database):
    create_workflow(client, admin_headers, workflow_id="annotation")
    a, b = world["a"]["id"], world["b"]["id"]
    j1 = create_job(client, admin_headers, "assembly", [a])
    j2 = create_job(client, admin_headers, "assembly", [a, b])
    j3 = create_job(client, admin_headers, "annotation", [b])
    _set_status(clean_database, j3["id"], "canceled")

    def ids(**params):
        response = client.get("/jobs", params=params, headers=admin_headers)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["resources"]]

    assert ids() == [j1["id"], j2["id"], j3["id"]]
    assert ids(workflow_id="assembly") == [j1["id"], j2["id"]]
    assert ids(data_resource_id=b) == [j2["id"], j3["id"]]
    assert ids(data_resource_id=a, workflow_id="assembly") == [j1["id"], j2["id"]]
    assert ids(status="unclaimed") == [j1["id"], j2["id"]]
    assert ids(status="canceled", data_resource_id=b) == [j3["id"]]
    assert ids(workflow_id="nope") == []
    assert ids(claimable="false") == ids()


def test_unknown_status_filter_is_422(client, admin_headers):
    assert ("query", "status") in error_locations(
        client.get("/jobs", params={"status": "lost"}, headers=admin_headers)
    )


def test_claimable_needs_a_site_client(client, admin_headers, clean_database):
    plain = make_user_headers(client, clean_database, "plain")
    for headers in (admin_headers, plain):
        response = client.get("/jobs", params={"claimable": "true"}, headers=headers)
        assert response.status_code == 403
        assert "site" in response.json()["detail"]


def _claim(database, job_id: str, *, lease_seconds: float, paused: bool = False, attempts: int = 1) -> None:
    """Put a job under an open operation of site-e, as a claim would (the claim itself is tested elsewhere)."""
    now = datetime.now(UTC)
    with database.session() as session:
        job = session.get(Job, job_id)
        job.status, job.attempts = "claimed", attempts
        session.add(
            Operation(
                id=new_id("op"),
                job_id=job_id,
                site_id="site-e",
                workflow_id=job.workflow_id,
                attempt=attempts,
                state="paused" if paused else "running",
                lease_expire_time=now + timedelta(seconds=lease_seconds),
                lease_seconds=300,
            )
        )


def test_claimable_lists_what_the_calling_site_could_claim_now(
    client, admin_headers, site_headers, world, clean_database
):
    site_e = site_headers("site-e", ["gpu", "metagenome-assembly"])
    cpu_only = site_headers("site-c", ["metagenome-assembly"])
    create_workflow(
        client,
        admin_headers,
        workflow_id="gpu-assembly",
        required_capabilities=["gpu", "metagenome-assembly"],
    )
    create_workflow(client, admin_headers, workflow_id="any-site", required_capabilities=[])
    a = world["a"]["id"]
    gpu_free = create_job(client, admin_headers, "gpu-assembly", [a])
    open_free = create_job(client, admin_headers, "any-site", [a])
    held = create_job(client, admin_headers, "any-site", [a])
    lapsed = create_job(client, admin_headers, "gpu-assembly", [a])
    lapsed_paused = create_job(client, admin_headers, "any-site", [a])
    lapsed_last_attempt = create_job(client, admin_headers, "any-site", [a])
    done = create_job(client, admin_headers, "any-site", [a])
    _claim(clean_database, held["id"], lease_seconds=300)
    _claim(clean_database, lapsed["id"], lease_seconds=-1)
    _claim(clean_database, lapsed_paused["id"], lease_seconds=-1, paused=True)
    _claim(clean_database, lapsed_last_attempt["id"], lease_seconds=-1, attempts=3)
    _set_status(clean_database, done["id"], "succeeded")

    def claimable(headers, **params):
        response = client.get("/jobs", params={"claimable": "true", **params}, headers=headers)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["resources"]]

    # A lapsed lease never blocks a claim, even before the reaper has ended its operation.
    assert claimable(site_e) == [gpu_free["id"], open_free["id"], lapsed["id"]]
    assert claimable(cpu_only) == [open_free["id"]]
    # Site D has no capabilities: only the workflow that needs none.
    assert claimable(world["site_d"]) == [open_free["id"]]
    assert claimable(site_e, workflow_id="gpu-assembly") == [gpu_free["id"], lapsed["id"]]
    assert claimable(site_e, status="claimed") == [lapsed["id"]]


def test_claimable_pages_like_any_list(client, admin_headers, site_headers, world):
    site_e = site_headers("site-e")
    made = [create_job(client, admin_headers, "assembly", [world["a"]["id"]])["id"] for _ in range(5)]
    seen, token = [], None
    while True:
        params = {"claimable": "true", "max_page_size": 2, **({"page_token": token} if token else {})}
        page = client.get("/jobs", params=params, headers=site_e).json()
        seen += [job["id"] for job in page["resources"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == made


def test_get_job_does_not_swallow_the_custom_methods(client, admin_headers, site_headers, world):
    site_e = site_headers("site-e")
    job = create_job(client, admin_headers, "assembly", [world["a"]["id"]])
    claim = client.post(f"/jobs/{job['id']}:claim", headers=site_e)
    assert claim.status_code == 201, claim.text
    assert claim.json()["metadata"]["job_id"] == job["id"]
    assert client.get(f"/jobs/{job['id']}", headers=site_e).json()["status"] == "claimed"
    # A custom method is POST only; read as a GET, it is just an unknown job id.
    assert client.get(f"/jobs/{job['id']}:claim", headers=site_e).status_code == 404
    release = client.post(f"/jobs/{job['id']}:release", headers=site_e)
    assert release.status_code == 200, release.text
    assert release.json()["status"] == "unclaimed"
