"""The seed design's sequence diagram, end to end through the API, with two sites and real tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.integration.conftest import bearer, make_site


def test_site_d_hosts_site_e_executes_and_site_d_follows(client, clean_database, admin_headers):
    site_d = bearer(client, **make_site(clean_database, "site-d", []))
    site_e = bearer(client, **make_site(clean_database, "site-e", ["metagenome-assembly"]))

    # Site D registers a data resource.
    reads = {
        "name": "sample-1.fastq.gz",
        "url": "https://site-d.example.org/data/sample-1.fastq.gz",
        "data_type": "fastq",
        "size": 1_000_000,
        "checksums": [{"type": "sha256", "checksum": "ab" * 32}],
    }
    registered = client.post("/data_resources", json=reads, headers=site_d)
    assert registered.status_code == 201, registered.text
    data_resource = registered.json()
    assert data_resource["site_id"] == "site-d"

    # Staff set up the workflow, and a job for the data (the sensor does this outside the API test).
    workflow = {
        "id": "assembly",
        "name": "Metagenome assembly",
        "version": "2.1",
        "data_types": ["fastq"],
        "required_capabilities": ["metagenome-assembly"],
        "config": {"threads": 16},
        "enabled": True,
    }
    assert client.post("/workflows", json=workflow, headers=admin_headers).status_code == 201
    made = client.post(
        "/jobs",
        json={"workflow_id": "assembly", "data_resource_ids": [data_resource["id"]]},
        headers=admin_headers,
    )
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]

    # Site E asks for jobs it can claim, and claims one.
    claimable = client.get("/jobs", params={"claimable": "true"}, headers=site_e)
    assert claimable.status_code == 200
    jobs = claimable.json()["resources"]
    assert [job["id"] for job in jobs] == [job_id]
    job = jobs[0]
    assert job["config"]["threads"] == 16
    assert [dr["url"] for dr in job["config"]["data_resources"]] == [reads["url"]]
    # Site D lacks the capability: nothing is claimable for it.
    assert client.get("/jobs", params={"claimable": "true"}, headers=site_d).json()["resources"] == []

    claimed = client.post(f"/jobs/{job_id}:claim", headers=site_e)
    assert claimed.status_code == 201, claimed.text
    op = claimed.json()
    assert op["metadata"]["site_id"] == "site-e"

    # Site E fetches the data from Site D (outside the runtime), reports progress, then the execution.
    beat = client.patch(f"/operations/{op['id']}", json={"metadata": {"progress": 50}}, headers=site_e)
    assert beat.status_code == 200
    ended = datetime.now(UTC)
    execution_body = {
        "operation_id": op["id"],
        "status": "succeeded",
        "started_at": (ended - timedelta(minutes=30)).isoformat(),
        "ended_at": ended.isoformat(),
        "outputs": [
            {
                "name": "sample-1.contigs.fa",
                "url": "https://site-e.example.org/out/sample-1.contigs.fa",
                "data_type": "contigs",
                "size": 250_000,
                "checksums": [{"type": "md5", "checksum": "cd" * 16}],
            }
        ],
        "details": {"tool": "metaspades"},
    }
    posted = client.post(
        f"/jobs/{job_id}/executions", json=execution_body, headers={**site_e, "Idempotency-Key": "run-1"}
    )
    assert posted.status_code == 201, posted.text
    execution = posted.json()
    assert (execution["job_id"], execution["site_id"], execution["operation_id"]) == (
        job_id,
        "site-e",
        op["id"],
    )
    output = execution["outputs"][0]
    assert output["site_id"] == "site-e"

    done = client.patch(
        f"/operations/{op['id']}",
        json={
            "metadata": {**beat.json()["metadata"], "progress": 100},
            "done": True,
            "result": {"execution_id": execution["id"]},
        },
        headers=site_e,
    )
    assert done.status_code == 200, done.text
    finished = done.json()
    assert finished["done"] is True
    assert finished["error"] is None
    assert finished["result"] == execution
    assert finished["metadata"]["state"] == "succeeded"
    assert client.get(f"/jobs/{job_id}", headers=site_d).json()["status"] == "succeeded"

    # The output is a data resource of Site E, ready to trigger the next workflow.
    outputs = client.get("/data_resources", params={"site_id": "site-e"}, headers=site_d).json()["resources"]
    assert [dr["id"] for dr in outputs] == [output["id"]]

    # Site D, curious, follows the operations on its data and reads the execution.
    followed = client.get("/operations", params={"data_resource_id": data_resource["id"]}, headers=site_d)
    assert followed.status_code == 200
    operations = followed.json()["resources"]
    assert [o["id"] for o in operations] == [op["id"]]
    assert operations[0]["result"]["id"] == execution["id"]
    read = client.get(f"/jobs/{job_id}/executions/{execution['id']}", headers=site_d)
    assert read.status_code == 200
    assert read.json() == execution
