"""Workflows with inputs by role: the data resources sensor (evaluated in-process) makes one job per (workflow,
group) once the group has every required role, whichever site registered what, in whatever order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from nmdc_runtime.dagster.checks import GROUPS_COMPLETE
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.data_resources import data_resources_sensor
from nmdc_runtime.dagster.sensors.health import runtime_health_sensor
from nmdc_runtime.db import Database
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Job, JobInput, WaitingGroup
from nmdc_runtime.services import catalog as catalog_service
from nmdc_runtime.store import accounts as accounts_store
from tests.dagster.conftest import SHA, tick

BINNING = {
    "contigs": {"data_type": "contigs"},
    "mapping": {"data_type": "bam"},
    "annotation": {"data_type": "gff", "optional": True},
}
"""A binning-like workflow: contigs and read mapping of one sample are required, an annotation is optional."""


@pytest.fixture
def sites(clean_database: Database) -> None:
    """Two data sites: site-d hosts reads and their mapping, site-a assembled the contigs."""
    with clean_database.session() as session:
        for site_id in ("site-d", "site-a"):
            accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=[])


@pytest.fixture
def workflow(clean_database: Database, settings, sites) -> Callable[..., None]:
    """`workflow("binning", BINNING, enabled=True)` defines a workflow as the API does."""

    def make(workflow_id: str = "binning", inputs: dict | None = None, *, enabled: bool = True) -> None:
        roles = {
            role: {"data_type": spec["data_type"], "optional": spec.get("optional", False)}
            for role, spec in (inputs or BINNING).items()
        }
        with clean_database.sessionmaker() as session:
            catalog_service.create_workflow(
                session,
                policy=settings.policy(),
                workflow_id=workflow_id,
                name=workflow_id,
                version="1",
                data_types=[],
                inputs=roles,
                required_capabilities=[],
                config={"threads": 8},
                enabled=enabled,
            )

    return make


@pytest.fixture
def register(clean_database: Database, sites) -> Callable[..., str]:
    """`register("site-a", "contigs", group="g1")` registers a data resource; returns its id."""

    def make(site_id: str, data_type: str, *, group: str | None, age: timedelta = timedelta(0)) -> str:
        dr_id = new_id("dr")
        with clean_database.session() as session:
            session.add(
                DataResource(
                    id=dr_id,
                    site_id=site_id,
                    name=f"{group}.{data_type}",
                    url=f"https://{site_id}.example.org/{dr_id}",
                    data_type=data_type,
                    size=10,
                    checksums=[{"type": "sha256", "checksum": SHA}],
                    group=group,
                    created_at=datetime.now(UTC) - age,
                )
            )
        return dr_id

    return make


def group_jobs(database: Database) -> dict[tuple[str, str], Job]:
    """The sensor's group jobs, by (workflow, group); fails if a pair has two."""
    with database.session() as session:
        rows = list(session.scalars(sa.select(Job).where(Job.trigger_group.is_not(None)).order_by(Job.seq)))
        session.expunge_all()
    made = {(job.workflow_id, job.trigger_group): job for job in rows}
    assert len(made) == len(rows), "two jobs of one (workflow, group)"
    return made


def inputs_of(job: Job) -> dict[str, str]:
    return {role: document["id"] for role, document in job.config["inputs"].items()}


def waiting(database: Database) -> set[tuple[str, str]]:
    with database.session() as session:
        return set(session.execute(sa.select(WaitingGroup.workflow_id, WaitingGroup.group)).tuples())


def test_inputs_arriving_out_of_order_from_two_sites_make_one_job_per_group_whatever_replays(
    runtime, clean_database, workflow, register
):
    workflow()
    # The mapping of both samples first (site-d), then contigs of g2, then of g1 (site-a): every order.
    bam1, bam2 = register("site-d", "bam", group="g1"), register("site-d", "bam", group="g2")
    first = tick(data_resources_sensor, runtime)
    assert group_jobs(clean_database) == {}
    assert waiting(clean_database) == {("binning", "g1"), ("binning", "g2")}
    # The inputs of incomplete groups are matched (no "waiting for the sensor" alarm), and not said to match
    # nothing.
    with clean_database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).where(DataResource.matched_at.is_(None))) == 0
    assert "matched no enabled workflow" not in first.skip_reason.skip_message

    contigs2 = register("site-a", "contigs", group="g2")
    second = tick(data_resources_sensor, runtime)
    assert set(group_jobs(clean_database)) == {("binning", "g2")}
    assert second.skip_reason.skip_message == "made 1 job of binning for 1 group"
    (event,) = second.asset_events
    assert event.partition == "binning"
    [job2] = group_jobs(clean_database).values()
    # The event names the job's group and the data resource of each role.
    assert event.metadata["jobs"].value == [
        {"job_id": job2.id, "group": "g2", "inputs": {"contigs": contigs2, "mapping": bam2}}
    ]
    assert event.metadata["groups"].value == ["g2"]

    contigs1 = register("site-a", "contigs", group="g1")
    tick(data_resources_sensor, runtime)
    # Replays: the same tick again, the queue as if never matched, and cursors moved back.
    tick(data_resources_sensor, runtime, cursor=None)
    with clean_database.session() as session:
        session.execute(sa.update(DataResource).values(matched_at=None))
    for cursor in (None, '{"seq": 0}', "not json"):
        tick(data_resources_sensor, runtime, cursor=cursor)

    jobs = group_jobs(clean_database)
    assert set(jobs) == {("binning", "g1"), ("binning", "g2")}
    assert waiting(clean_database) == set()
    job1 = jobs[("binning", "g1")]
    assert inputs_of(job1) == {"contigs": contigs1, "mapping": bam1}
    assert job1.group == "g1" and job1.config["group"] == "g1" and job1.config["threads"] == 8
    # data_resources lists the inputs too, in role order, each as the API shows it (from both sites).
    assert [(d["id"], d["site_id"]) for d in job1.config["data_resources"]] == [
        (contigs1, "site-a"),
        (bam1, "site-d"),
    ]
    assert job1.config["inputs"]["mapping"] == job1.config["data_resources"][1]
    with clean_database.session() as session:
        assert set(
            session.execute(sa.select(JobInput.data_resource_id).where(JobInput.job_id == job1.id)).scalars()
        ) == {
            contigs1,
            bam1,
        }


def test_a_second_sensor_job_of_a_workflow_and_group_is_impossible(
    runtime, clean_database, workflow, register
):
    workflow()
    register("site-a", "contigs", group="g1")
    register("site-d", "bam", group="g1")
    tick(data_resources_sensor, runtime)
    [job] = group_jobs(clean_database).values()
    with (
        pytest.raises(IntegrityError, match="uq_jobs_workflow_trigger_group"),
        clean_database.session() as session,
    ):
        session.add(Job(workflow_id="binning", config={}, max_attempts=3, group="g1", trigger_group="g1"))
        session.flush()
    assert job.created_by.startswith("dagster:sensor:data_resources_sensor")


def test_workflows_created_or_enabled_later_get_the_jobs_of_every_complete_group(
    runtime, clean_database, settings, workflow, register
):
    for group in ("g1", "g2", "g3"):
        register("site-a", "contigs", group=group)
    register("site-d", "bam", group="g1")
    register("site-d", "bam", group="g2")
    tick(data_resources_sensor, runtime)  # matched against no workflow yet

    workflow("binning")  # created after the data: backfilled
    workflow("binning-later", enabled=False)
    tick(data_resources_sensor, runtime)
    assert set(group_jobs(clean_database)) == {("binning", "g1"), ("binning", "g2")}
    assert waiting(clean_database) == {("binning", "g3")}

    with clean_database.sessionmaker() as session:
        catalog_service.update_workflow(
            session, workflow_id="binning-later", changes={"enabled": True}, policy=settings.policy()
        )
    tick(data_resources_sensor, runtime)
    assert set(group_jobs(clean_database)) == {
        (w, g) for w in ("binning", "binning-later") for g in ("g1", "g2")
    }
    assert waiting(clean_database) == {("binning", "g3"), ("binning-later", "g3")}

    # New roles: what the groups miss is judged again, by the backfill the change starts.
    roles = {role: {"data_type": spec["data_type"], "optional": False} for role, spec in BINNING.items()}
    with clean_database.sessionmaker() as session:
        catalog_service.update_workflow(
            session, workflow_id="binning", changes={"inputs": roles}, policy=settings.policy()
        )
    assert waiting(clean_database) == {("binning-later", "g3")}
    register("site-a", "gff", group="g4")
    tick(data_resources_sensor, runtime)
    assert waiting(clean_database) == {("binning", "g3"), ("binning-later", "g3"), ("binning", "g4")}
    assert len(group_jobs(clean_database)) == 4  # made jobs keep their config


def test_optional_roles_are_filled_when_present_at_that_moment(runtime, clean_database, workflow, register):
    workflow()
    gff1 = register("site-d", "gff", group="g1")
    c1, b1 = register("site-a", "contigs", group="g1"), register("site-d", "bam", group="g1")
    c2, b2 = register("site-a", "contigs", group="g2"), register("site-d", "bam", group="g2")
    tick(data_resources_sensor, runtime)
    register("site-d", "gff", group="g2")  # too late: g2's job is made
    # An optional role alone does not start a group.
    register("site-d", "gff", group="g3")
    tick(data_resources_sensor, runtime)

    jobs = group_jobs(clean_database)
    assert set(jobs) == {("binning", "g1"), ("binning", "g2")}
    assert inputs_of(jobs[("binning", "g1")]) == {"annotation": gff1, "contigs": c1, "mapping": b1}
    assert inputs_of(jobs[("binning", "g2")]) == {"contigs": c2, "mapping": b2}
    assert waiting(clean_database) == set()


def test_the_first_registered_of_a_role_wins_and_later_ones_make_no_second_job(
    runtime, clean_database, workflow, register
):
    workflow()
    early = register("site-a", "contigs", group="g1")
    register("site-d", "contigs", group="g1")
    bam = register("site-d", "bam", group="g1")
    tick(data_resources_sensor, runtime)
    register("site-a", "contigs", group="g1")
    register("site-d", "bam", group="g1")
    tick(data_resources_sensor, runtime)
    [job] = group_jobs(clean_database).values()
    assert inputs_of(job) == {"contigs": early, "mapping": bam}


def test_data_of_no_group_fills_no_role_and_one_input_workflows_keep_a_job_per_data_resource(
    runtime, clean_database, workflow, register, make_workflow
):
    workflow()
    make_workflow("qc", ["bam"])
    grouped = register("site-d", "bam", group="g1")
    loose = register("site-d", "bam", group=None)
    register("site-a", "contigs", group=None)
    tick(data_resources_sensor, runtime)
    assert group_jobs(clean_database) == {}
    with clean_database.session() as session:
        qc = {
            job.trigger_data_resource_id: job
            for job in session.scalars(sa.select(Job).where(Job.workflow_id == "qc"))
        }
    assert set(qc) == {grouped, loose}
    # A one-input job belongs to its input's group: its outputs will too.
    assert (qc[grouped].group, qc[grouped].config["group"], qc[grouped].config["inputs"]) == ("g1", "g1", {})
    assert (qc[loose].group, qc[loose].config["group"]) == (None, None)


def test_a_group_missing_a_role_too_long_fails_the_check_naming_it_and_the_roles(
    settings, clean_database, workflow, register
):
    runtime = RuntimeDatabase(settings.model_copy(update={"check_incomplete_group_seconds": 3600}))
    health = runtime_health_sensor(60)
    workflow()
    register("site-d", "bam", group="sample-7", age=timedelta(hours=2))
    register("site-d", "bam", group="sample-8")  # waiting, but not for long
    tick(data_resources_sensor, runtime)

    def check():
        result = tick(health, runtime)
        status = {e.check_name: e for e in result.asset_events if hasattr(e, "check_name")}
        return result.asset_events[0].metadata, status[GROUPS_COMPLETE.name]

    figures, finding = check()
    assert not finding.passed
    assert "sample-7 (workflow binning) misses contigs" in finding.description
    assert "sample-8" not in finding.description
    assert finding.metadata["groups"].value[0] | {"waiting_since": None} == {
        "workflow_id": "binning",
        "group": "sample-7",
        "missing": ["contigs"],
        "filled": ["mapping"],
        "waiting_since": None,
    }
    assert (figures["incomplete_groups"].value, figures["incomplete_groups_overdue"].value) == (2, 1)
    assert figures["oldest_incomplete_group_age_seconds"].value >= 7200

    register("site-a", "contigs", group="sample-7")
    tick(data_resources_sensor, runtime)
    figures, finding = check()
    assert finding.passed
    assert figures["incomplete_groups"].value == 1
