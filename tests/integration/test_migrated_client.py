"""NMDC's site software after its migration, played call by call as docs/migrating-from-nmdc-runtime.md says.

A two-input workflow like NMDC's MAGs (the contigs and the read mapping of one sample) gets its inputs from two
data sites, each serving real files over HTTP with the md5 checksums NMDC data objects carry. The migrated client
speaks plain HTTP as NMDC's own client does (a form for the token, JSON bodies sent as text with their
Content-Type, a claim with no body), not through nmdc_site's client: what it sends is what a migrated site sends.
Its slow cadence (NMDC's Watcher looks every few minutes) is played by a lease shorter than the time between its
claim and its results, with one heartbeat in between. The Dagster sensor is ticked in-process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.data_resources import data_resources_sensor
from tests.dagster.conftest import tick
from tests.integration.builders import error_locations
from tests.integration.claim_world import headers_for, site_principal
from tests.integration.conftest import make_site

CAPABILITY = "metagenome-binning"
LEASE_SECONDS = 3
"""The MAGs workflow's lease in this test: shorter than the client's cycle between claim and results."""

MAGS = {
    "id": "mags",
    "name": "MAGs",
    "version": "v1.3.19",
    "inputs": {
        "contig_file": {"data_type": "assembly-contigs"},
        "sam_file": {"data_type": "assembly-coverage-bam"},
    },
    "required_capabilities": [CAPABILITY],
    "config": {"git_repo": "https://github.com/microbiomedata/metaMAGs", "wdl": "mbin_nmdc.wdl"},
    "lease_seconds": LEASE_SECONDS,
}
REPORT = {
    "id": "mags-report",
    "name": "MAGs report",
    "version": "1",
    "inputs": {
        "contig_file": {"data_type": "assembly-contigs"},
        "hqmq_bins": {"data_type": "metagenome-hqmq-bins-compression-file"},
    },
}
"""The next step of the chain: it needs the sample's contigs and the bins MAGs makes of them."""


def data_type_tag(data_object_type: str) -> str:
    """The guide's rule for NMDC's `data_object_type` (words and spaces) as a data type (a tag)."""
    return re.sub(r"[^a-z0-9]+", "-", data_object_type.lower()).strip("-")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@contextmanager
def serving(folder: Path) -> Iterator[str]:
    """Serve `folder` over HTTP on 127.0.0.1 (a data site's files); yields the base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class MigratedClient:
    """What NMDC's site software sends once migrated: each method is one call of the guide."""

    def __init__(self, api: TestClient, credentials: dict[str, str]) -> None:
        self.api = api
        self.credentials = credentials
        self.header: dict[str, str] = {}
        self.sent: list[str] = []

    def call(self, method: str, path: str, body: Any = None, **headers: str):
        """One request, its body JSON sent as text under the token's headers, as NMDC's client sends it."""
        self.sent.append(f"{method} {path.split('?')[0]}")
        content = None if body is None else json.dumps(body)
        return self.api.request(method, path, content=content, headers={**self.header, **headers})

    def get_token(self) -> None:
        """POST /token with the form NMDC's client already sends."""
        self.sent.append("POST /token")
        answer = self.api.post("/token", data=self.credentials)
        assert answer.status_code == 200, answer.text
        self.header = {
            "accept": "application/json",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {answer.json()['access_token']}",
        }

    def claimable_jobs(self, workflow_id: str, free_slots: int) -> list[dict[str, Any]]:
        """GET /jobs?claimable=true&workflow_id=..., one page as large as the slots free now."""
        answer = self.call(
            "GET", f"/jobs?claimable=true&workflow_id={workflow_id}&max_page_size={free_slots}"
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["resources"]

    def claim(self, job_id: str) -> dict[str, Any] | None:
        """POST /jobs/{id}:claim with no body; 409 means another site has it: None, try the next."""
        answer = self.call("POST", f"/jobs/{job_id}:claim")
        if answer.status_code == 409:
            return None
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    def holders(self, job_id: str) -> list[dict[str, Any]]:
        """GET /operations?job_id=...&done=false: the claims on a job (the old record's `claims`)."""
        answer = self.call("GET", f"/operations?job_id={job_id}&done=false")
        assert answer.status_code == 200, answer.text
        return answer.json()["resources"]

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.call("GET", f"/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def heartbeat(self, op_id: str, status: str) -> dict[str, Any]:
        """PATCH /operations/{id} with the engine's status as its message: renews the lease."""
        answer = self.call("PATCH", f"/operations/{op_id}", {"metadata": {"message": status}})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def post_execution(self, job_id: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        answer = self.call("POST", f"/jobs/{job_id}/executions", body, **{"Idempotency-Key": key})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def finish(self, op_id: str) -> dict[str, Any]:
        """PATCH /operations/{id} with `done: true` alone: the execution just posted decides."""
        answer = self.call("PATCH", f"/operations/{op_id}", {"done": True})
        assert answer.status_code == 200, answer.text
        return answer.json()


def fetch(url: str, checksums: list[dict[str, str]], size: int) -> bytes:
    """Download an input straight from its data site and check it as NMDC does: size and md5."""
    answer = httpx.get(url, timeout=5)
    assert answer.status_code == 200, url
    data = answer.content
    [expected] = [c["checksum"] for c in checksums if c["type"] == "md5"]
    assert (len(data), md5(data)) == (size, expected)
    return data


def data_object(folder: Path, base: str, group: str, name: str, data_object_type: str, data: bytes) -> dict:
    """Write one output and describe it as NMDC's software does (an NMDC-schema DataObject)."""
    (folder / group).mkdir(exist_ok=True)
    (folder / group / name).write_bytes(data)
    return {
        "id": f"nmdc:dobj-11-{md5(name.encode())[:8]}",
        "type": "nmdc:DataObject",
        "name": name,
        "url": f"{base}/{group}/{name}",
        "data_object_type": data_object_type,
        "md5_checksum": md5(data),
        "file_size_bytes": len(data),
        "description": f"{data_object_type} for {group}",
    }


def as_output(obj: dict[str, Any]) -> dict[str, Any]:
    """An NMDC DataObject as an output data resource (no group: it inherits the job's)."""
    return {
        "name": obj["name"],
        "url": obj["url"],
        "data_type": data_type_tag(obj["data_object_type"]),
        "size": obj["file_size_bytes"],
        "checksums": [{"type": "md5", "checksum": obj["md5_checksum"]}],
        "description": obj["description"],
    }


@pytest.fixture
def admin(client, admin_headers) -> dict[str, str]:
    for workflow in (MAGS, REPORT):
        assert client.post("/workflows", json=workflow, headers=admin_headers).status_code == 201
    return admin_headers


def test_a_migrated_nmdc_client_claims_runs_and_finishes_a_two_input_job(
    client, clean_database, settings, admin, site_headers, tmp_path
):
    runtime = RuntimeDatabase(settings)
    site_d = site_headers("site-d")  # sequencing data site: the reads mapped back onto the assembly
    site_a = site_headers("site-a")  # the site that assembled the contigs
    nersc = MigratedClient(client, make_site(clean_database, "nersc", [CAPABILITY]))
    make_site(clean_database, "site-f", [CAPABILITY])  # another executing site, quicker to one job
    site_f = headers_for(settings, site_principal("site-f"))
    for folder in ("d", "a", "out"):
        (tmp_path / folder).mkdir()

    with (
        serving(tmp_path / "d") as d_url,
        serving(tmp_path / "a") as a_url,
        serving(tmp_path / "out") as out_url,
    ):
        samples = ("nmdc:dgns-11-aaaa0001", "nmdc:dgns-11-aaaa0002")
        files = {}
        for i, group in enumerate(samples):
            for site, folder, base, name, data_object_type in (
                (site_a, "a", a_url, f"s{i}_contigs.fna", "Assembly Contigs"),
                (site_d, "d", d_url, f"s{i}_pairedMapped_sorted.bam", "Assembly Coverage BAM"),
            ):
                data = f"{name} of {group}\n".encode() * 50
                (tmp_path / folder / name).write_bytes(data)
                files[name] = data
                body = {
                    "name": name,
                    "url": f"{base}/{name}",
                    "data_type": data_type_tag(data_object_type),
                    "size": len(data),
                    "checksums": [{"type": "md5", "checksum": md5(data)}],
                    "group": group,
                }
                assert client.post("/data_resources", json=body, headers=site).status_code == 201
            if i == 0:
                tick(data_resources_sensor, runtime)  # sample 1 complete, sample 2 not yet registered

        # One job per sample, once each sample has both inputs; more ticks make no more.
        tick(data_resources_sensor, runtime)
        tick(data_resources_sensor, runtime)
        made = client.get("/jobs?workflow_id=mags", headers=admin).json()["resources"]
        assert sorted(j["config"]["group"] for j in made) == sorted(samples)

        # The migrated client's cycle: a token, one page of claimable jobs of its workflow.
        nersc.get_token()
        listed = nersc.claimable_jobs("mags", free_slots=5)
        assert [j["id"] for j in listed] == [j["id"] for j in made]
        # Between its list and its claim, another site takes the first job.
        assert client.post(f"/jobs/{listed[0]['id']}:claim", headers=site_f).status_code == 201
        claimed = None
        for job in listed:
            op = nersc.claim(job["id"])
            if op is None:  # 409: taken. Who holds it is an operation of the job, not a `claims` key.
                assert [h["metadata"]["site_id"] for h in nersc.holders(job["id"])] == ["site-f"]
                continue
            claimed = job
            break
        assert claimed is not None and claimed["id"] == listed[1]["id"]
        assert (op["metadata"]["lease_seconds"], op["done"]) == (LEASE_SECONDS, False)
        first_expiry = datetime.fromisoformat(op["metadata"]["lease_expire_time"])
        claimed_at = time.monotonic()

        # Its inputs, by role, straight from the two data sites, checked against their md5 and size.
        job = nersc.job(claimed["id"])
        assert job["workflow_id"] == "mags" and "workflow" not in job and "claims" not in job
        group = job["config"]["group"]
        inputs = job["config"]["inputs"]
        assert {role: inputs[role]["site_id"] for role in inputs} == {
            "contig_file": "site-a",
            "sam_file": "site-d",
        }
        for role in ("contig_file", "sam_file"):
            resource = inputs[role]
            assert fetch(resource["url"], resource["checksums"], resource["size"]) == files[resource["name"]]

        # Its cycle is longer than the lease: one heartbeat within the lease carries the claim over.
        time.sleep(max(0.0, LEASE_SECONDS / 2 - (time.monotonic() - claimed_at)))
        renewed = nersc.heartbeat(op["id"], "Running")
        assert datetime.fromisoformat(renewed["metadata"]["lease_expire_time"]) > first_expiry
        time.sleep(max(0.0, (first_expiry - datetime.now(UTC)).total_seconds() + 0.2))
        assert datetime.now(UTC) > first_expiry  # without the heartbeat the claim would have lapsed by now

        # Results: NMDC-schema data objects, written where its own server serves them, as outputs.
        ended = datetime.now(UTC)
        objects = [
            data_object(tmp_path / "out", out_url, group, name, kind, data)
            for name, kind, data in (
                ("hqmq_bins.zip", "Metagenome HQMQ Bins Compression File", b"PK bins " * 300),
                ("checkm_qa.out", "CheckM Statistics", b"bin\tcompleteness\n" * 40),
                ("cromwell-metadata.json", "Engine Metadata", json.dumps({"calls": "x" * 100_000}).encode()),
            )
        ]
        workflow_execution = {
            "id": "nmdc:wfmag-11-aaaa0002.1",
            "type": "nmdc:MagsAnalysis",
            "was_informed_by": [group],
            "has_input": [inputs["contig_file"]["id"], inputs["sam_file"]["id"]],
            "has_output": [o["id"] for o in objects],
            "started_at_time": (ended - timedelta(hours=3)).isoformat(),
            "ended_at_time": ended.isoformat(),
            "version": "v1.3.19",
        }
        execution = nersc.post_execution(
            job["id"],
            {
                "operation_id": op["id"],
                "status": "succeeded",
                "started_at": workflow_execution["started_at_time"],
                "ended_at": workflow_execution["ended_at_time"],
                "outputs": [as_output(o) for o in objects],
                "details": {
                    "nmdc_database": {
                        "workflow_execution_set": [workflow_execution],
                        "data_object_set": objects,
                    }
                },
            },
            key=f"nmdc-execution:{op['id']}",
        )
        assert time.monotonic() - claimed_at > LEASE_SECONDS
        assert [(o["group"], o["site_id"]) for o in execution["outputs"]] == [(group, "nersc")] * 3
        assert [o["checksums"] for o in execution["outputs"]] == [
            [{"type": "md5", "checksum": o["md5_checksum"]}] for o in objects
        ]

        done = nersc.finish(op["id"])
        assert (done["done"], done["metadata"]["state"], done["result"]["id"]) == (
            True,
            "succeeded",
            execution["id"],
        )
        assert nersc.job(job["id"])["status"] == "succeeded"
        assert nersc.sent == [
            "POST /token",
            "GET /jobs",
            "POST " + f"/jobs/{listed[0]['id']}:claim",
            "GET /operations",
            "POST " + f"/jobs/{job['id']}:claim",
            "GET " + f"/jobs/{job['id']}",
            "PATCH " + f"/operations/{op['id']}",
            "POST " + f"/jobs/{job['id']}/executions",
            "PATCH " + f"/operations/{op['id']}",
            "GET " + f"/jobs/{job['id']}",
        ]

        # The outputs inherited the sample: with its contigs they complete the next workflow's group.
        tick(data_resources_sensor, runtime)
        [report] = client.get("/jobs?workflow_id=mags-report", headers=admin).json()["resources"]
        assert report["config"]["group"] == group
        bins = report["config"]["inputs"]["hqmq_bins"]
        assert (bins["id"], bins["site_id"]) == (execution["outputs"][0]["id"], "nersc")
        assert report["config"]["inputs"]["contig_file"]["id"] == inputs["contig_file"]["id"]
        assert fetch(bins["url"], bins["checksums"], bins["size"]) == b"PK bins " * 300


def test_what_the_unmigrated_client_sends_is_answered_as_the_guide_says(
    client, clean_database, settings, admin, site_headers
):
    """Each row of the guide's table: the old call and its answer, so that the guide stays true."""
    nersc = MigratedClient(client, make_site(clean_database, "nersc", [CAPABILITY]))
    nersc.get_token()
    site_a = site_headers("site-a")
    for data_type in ("assembly-contigs", "assembly-coverage-bam"):
        body = {
            "name": data_type,
            "url": f"https://data.example.org/{data_type}",
            "data_type": data_type,
            "size": 1,
            "checksums": [],
            "group": "g1",
        }
        assert client.post("/data_resources", json=body, headers=site_a).status_code == 201
    tick(data_resources_sensor, RuntimeDatabase(settings))
    [job] = client.get("/jobs?workflow_id=mags", headers=admin).json()["resources"]

    mongo = json.dumps({"workflow.id": {"$in": ["MAGs: v1.3.19"]}, "claims": {"$size": 0}})
    listed = nersc.call("GET", f"/jobs?max_page_size=100&filter={mongo}")
    assert (listed.status_code, error_locations(listed)) == (422, [("query", "filter")])

    op = nersc.claim(job["id"])
    assert op is not None and "id" in op
    assert nersc.claim(job["id"])["id"] == op["id"]  # the holder's repeated claim: the same operation
    make_site(clean_database, "site-f", [CAPABILITY])
    taken = client.post(f"/jobs/{job['id']}:claim", headers=headers_for(settings, site_principal("site-f")))
    assert taken.status_code == 409 and "id" not in taken.json()  # where the old Watcher read `id`

    database = {"workflow_execution_set": [{"id": "nmdc:wfmag-11-x.1"}], "data_object_set": []}
    assert nersc.call("POST", "/workflows/workflow_executions", database).status_code == 405

    # With its execution posted first (as the guide says), the old finish still carries the engine's record.
    ended = datetime.now(UTC)
    execution = {"operation_id": op["id"], "status": "succeeded", "started_at": ended.isoformat()}
    nersc.post_execution(
        job["id"], execution | {"ended_at": ended.isoformat()}, key=f"nmdc-execution:{op['id']}"
    )
    whole = nersc.call("GET", f"/operations/{op['id']}").json()["metadata"]
    old_finish = {"done": True, "metadata": {**whole, "extra": {"calls": "x" * 100_000}}}
    refused = nersc.call("PATCH", f"/operations/{op['id']}", old_finish)
    assert refused.status_code == 422 and "NMDC_MAX_METADATA_BYTES" in refused.text
    # The whole metadata sent back without the engine's record is accepted, and `done: true` finishes.
    finished = nersc.call("PATCH", f"/operations/{op['id']}", {"done": True, "metadata": whole})
    assert (finished.status_code, finished.json()["metadata"]["state"]) == (200, "succeeded")

    shown = nersc.job(job["id"])
    assert shown["workflow_id"] == "mags" and not {"workflow", "claims"} & shown.keys()


def test_a_migrated_client_can_claim_the_next_job_in_one_call(
    client, clean_database, settings, admin, site_headers
):
    """The guide's better way: `POST /jobs:claimNext` picks the job (no list, no 409), its Idempotency-Key
    making a retry after a lost answer get the same claim; 204 once nothing is left."""
    site_a, site_d = site_headers("site-a"), site_headers("site-d")
    nersc = MigratedClient(client, make_site(clean_database, "nersc", [CAPABILITY]))
    for site, name, data_object_type in (
        (site_a, "contigs.fna", "Assembly Contigs"),
        (site_d, "mapped.bam", "Assembly Coverage BAM"),
    ):
        body = {
            "name": name,
            "url": f"https://data.example.org/{name}",
            "data_type": data_type_tag(data_object_type),
            "size": 10,
            "checksums": [{"type": "md5", "checksum": md5(name.encode())}],
            "group": "nmdc:dgns-11-bbbb0001",
        }
        assert client.post("/data_resources", json=body, headers=site).status_code == 201
    tick(data_resources_sensor, RuntimeDatabase(settings))

    nersc.get_token()
    request = {"workflow_ids": ["mags"], "wait_seconds": 0}
    first = nersc.call("POST", "/jobs:claimNext", request, **{"Idempotency-Key": "cycle-1-slot-1"})
    assert first.status_code == 201, first.text
    claimed = first.json()
    assert (
        claimed["metadata"]["workflow_id"] == "mags"
        and claimed["job"]["config"]["group"] == "nmdc:dgns-11-bbbb0001"
    )
    assert set(claimed["job"]["config"]["inputs"]) == {"contig_file", "sam_file"}
    again = nersc.call("POST", "/jobs:claimNext", request, **{"Idempotency-Key": "cycle-1-slot-1"})
    assert again.status_code == 201 and again.json()["id"] == claimed["id"]
    none_left = nersc.call("POST", "/jobs:claimNext", request, **{"Idempotency-Key": "cycle-1-slot-2"})
    assert none_left.status_code == 204
