"""Inputs by role and groups through the API: workflows that name roles, data resources of a group, jobs made by
hand with inputs by role, `?group=` filters, and outputs that inherit their job's group (and so complete the
next workflow's group)."""

from __future__ import annotations

from typing import Any

import pytest

from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.data_resources import data_resources_sensor
from nmdc_runtime.services import executions as executions_service
from tests.dagster.conftest import tick
from tests.integration.builders import error_locations
from tests.integration.claim_world import (
    claim,
    create_workflow,
    data_resource_body,
    execution_body,
    make_world,
)

ROLES = {
    "contigs": {"data_type": "contigs"},
    "mapping": {"data_type": "bam"},
    "annotation": {"data_type": "gff", "optional": True},
}


@pytest.fixture
def world(client, clean_database, admin_headers, settings):
    world = make_world(client, clean_database, admin_headers, settings)
    body = {"id": "binning", "name": "binning", "version": "1", "inputs": ROLES, "config": {"k": 1}}
    response = world.client.post("/workflows", json=body, headers=world.admin)
    assert response.status_code == 201, response.text
    return world


def _job(world, **body: Any):
    return world.client.post("/jobs", json={"workflow_id": "binning", **body}, headers=world.admin)


def test_a_workflow_with_inputs_by_role_shows_their_data_types(world):
    shown = world.client.get("/workflows/binning", headers=world.user).json()
    assert shown["data_types"] == ["bam", "contigs", "gff"]
    assert shown["inputs"] == {
        "contigs": {"data_type": "contigs", "optional": False},
        "mapping": {"data_type": "bam", "optional": False},
        "annotation": {"data_type": "gff", "optional": True},
    }
    assert world.client.get("/workflows/wf", headers=world.user).json()["inputs"] is None


@pytest.mark.parametrize(
    ("inputs", "extra"),
    [
        ({"1st": {"data_type": "contigs"}}, {}),  # a role that is no identifier
        ({"a-b": {"data_type": "contigs"}}, {}),
        ({"contigs": {}}, {}),  # a role without a data type
        ({"contigs": {"data_type": "bad type"}}, {}),
        ({"a": {"data_type": "contigs"}, "b": {"data_type": "contigs"}}, {}),  # two roles of one data type
        ({"a": {"data_type": "contigs", "optional": True}}, {}),  # none required
        ({}, {}),
        ({"a": {"data_type": "contigs", "optional": "no"}}, {}),
        (ROLES, {"data_types": ["contigs"]}),  # both
    ],
)
def test_bad_inputs_by_role_are_422_and_make_nothing(world, inputs, extra):
    body = {"id": "bad", "name": "bad", "version": "1", "inputs": inputs, **extra}
    response = world.client.post("/workflows", json=body, headers=world.admin)
    assert response.status_code == 422, response.text
    assert world.client.get("/workflows/bad", headers=world.admin).status_code == 404


def test_patching_inputs_changes_the_data_types_which_are_otherwise_read_only(world):
    patch = lambda body: world.client.patch("/workflows/binning", json=body, headers=world.admin)  # noqa: E731
    assert ("body", "data_types") in error_locations(patch({"data_types": ["fastq"]}))
    assert error_locations(patch({"data_types": ["fastq"], "inputs": ROLES}))
    changed = patch({"inputs": {"reads": {"data_type": "fastq"}}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["data_types"] == ["fastq"]
    # Without roles, a workflow's data types are its own again.
    assert patch({"inputs": None}).json()["inputs"] is None
    assert patch({"data_types": ["tsv"]}).json()["data_types"] == ["tsv"]
    # A workflow without roles may be given some.
    assert world.client.patch("/workflows/wf", json={"inputs": ROLES}, headers=world.admin).json()[
        "data_types"
    ] == ["bam", "contigs", "gff"]


def test_data_resources_carry_a_group_of_at_most_256_characters_and_are_listed_by_it(world):
    a = _register(world, "contigs", "g" * 256)
    _register(world, "bam", "sample-2")
    assert a["group"] == "g" * 256
    assert world.client.get(f"/data_resources/{a['id']}", headers=world.user).json()["group"] == "g" * 256
    listed = world.client.get("/data_resources", params={"group": "g" * 256}, headers=world.user).json()
    assert [r["id"] for r in listed["resources"]] == [a["id"]]
    for group in ("g" * 257, ""):
        body = data_resource_body() | {"group": group}
        response = world.client.post("/data_resources", json=body, headers=world.site_d)
        assert ("body", "group") in error_locations(response)
    assert len(world.client.get("/data_resources", headers=world.user).json()["resources"]) == 2


def _register(world, data_type: str, group: str | None, headers=None) -> dict[str, Any]:
    body = data_resource_body(data_type=data_type) | {"group": group}
    response = world.client.post("/data_resources", json=body, headers=headers or world.site_d)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_job_made_by_hand_takes_inputs_by_role_checked_against_the_roles(world):
    contigs, bam = _register(world, "contigs", "g1"), _register(world, "bam", "g1")
    extra = _register(world, "fastq", "g1")
    response = _job(
        world, inputs={"mapping": bam["id"], "contigs": contigs["id"]}, data_resource_ids=[extra["id"]]
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["config"]["inputs"] == {"contigs": contigs, "mapping": bam}
    # data_resources: the inputs by role in role order, then the others; the group is the one they share.
    assert job["config"]["data_resources"] == [contigs, bam, extra]
    assert job["config"]["group"] == "g1"
    assert job["config"]["k"] == 1

    other = _register(world, "gff", "g2")
    mixed = _job(world, inputs={"mapping": bam["id"], "contigs": contigs["id"], "annotation": other["id"]})
    assert mixed.json()["config"]["group"] is None
    named = _job(world, inputs={"mapping": bam["id"], "contigs": contigs["id"]}, group="sample-x")
    assert named.json()["config"]["group"] == "sample-x"
    # Without inputs by role, as before: unchecked, and still of the group its inputs share.
    plain = _job(world, data_resource_ids=[bam["id"], extra["id"]])
    assert plain.status_code == 201 and plain.json()["config"]["group"] == "g1"
    assert plain.json()["config"]["inputs"] == {}

    listed = world.client.get("/jobs", params={"group": "g1"}, headers=world.user).json()["resources"]
    assert [j["id"] for j in listed] == [job["id"], plain.json()["id"]]
    claimable = world.client.get(
        "/jobs", params={"group": "sample-x", "claimable": "true"}, headers=world.site_e
    )
    assert [j["id"] for j in claimable.json()["resources"]] == [named.json()["id"]]


def test_inputs_that_do_not_fit_the_roles_are_422_and_make_no_job(world):
    contigs, bam = _register(world, "contigs", "g1"), _register(world, "bam", "g1")
    cases = [
        ({"inputs": {"contigs": contigs["id"]}}, ("body", "inputs")),  # a required role missing
        (
            {"inputs": {"contigs": contigs["id"], "mapping": bam["id"], "reads": bam["id"]}},
            ("body", "inputs"),
        ),
        ({"inputs": {"contigs": bam["id"], "mapping": bam["id"]}}, ("body", "inputs.contigs")),  # wrong type
        ({"inputs": {"contigs": contigs["id"], "mapping": bam["id"]}, "group": "g" * 257}, ("body", "group")),
        ({}, ("body", "data_resource_ids")),
    ]
    for body, location in cases:
        assert location in error_locations(_job(world, **body)), body
    no_roles = world.client.post(
        "/jobs", json={"workflow_id": "wf", "inputs": {"contigs": contigs["id"]}}, headers=world.admin
    )
    assert ("body", "inputs") in error_locations(no_roles)
    unknown = _job(world, inputs={"contigs": contigs["id"], "mapping": "dr-missing"})
    assert unknown.status_code == 404 and "dr-missing" in unknown.json()["detail"]
    assert world.client.get("/jobs", headers=world.admin).json()["resources"] == []


def _run(world, job_id: str, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    op = claim(world.client, world.site_e, job_id).json()
    body = execution_body(op["id"], outputs=0) | {"outputs": outputs}
    response = world.client.post(f"/jobs/{job_id}/executions", json=body, headers=world.site_e)
    assert response.status_code == 201, response.text
    return response.json()["outputs"]


@pytest.mark.parametrize("path", ["fast", "general"])
def test_outputs_inherit_their_job_s_group_and_complete_the_next_workflow_s_group(
    world, settings, monkeypatch, path
):
    # Assembly (one input) turns a sample's reads into contigs; binning needs the contigs and the mapping.
    create_workflow(world, "assembly", data_types=["fastq"], config={})
    world.client.patch("/workflows/wf", json={"enabled": False}, headers=world.admin)
    if path == "general":
        # The execution is recorded on the locked rows, as when the fast path finds that something moved.
        monkeypatch.setattr(executions_service, "_record_as_holder", lambda *args, **kwargs: None)
    runtime = RuntimeDatabase(settings)
    reads = _register(world, "fastq", "sample-1")
    bam = _register(world, "bam", "sample-1")
    tick(data_resources_sensor, runtime)
    [assembly] = world.client.get("/jobs", params={"workflow_id": "assembly"}, headers=world.admin).json()[
        "resources"
    ]
    assert assembly["config"]["group"] == "sample-1"
    assert (
        world.client.get("/jobs", params={"workflow_id": "binning"}, headers=world.admin).json()["resources"]
        == []
    )

    contigs, renamed = _run(
        world,
        assembly["id"],
        [data_resource_body(data_type="contigs"), data_resource_body(data_type="log") | {"group": "other"}],
    )
    assert (contigs["group"], contigs["site_id"]) == ("sample-1", "site-e")
    assert renamed["group"] == "other"  # the executing site said otherwise

    tick(data_resources_sensor, runtime)
    [binning] = world.client.get(
        "/jobs", params={"group": "sample-1", "workflow_id": "binning"}, headers=world.admin
    ).json()["resources"]
    assert binning["config"]["inputs"] == {"contigs": contigs, "mapping": bam}
    assert reads["id"] not in {d["id"] for d in binning["config"]["data_resources"]}
