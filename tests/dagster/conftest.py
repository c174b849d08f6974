"""Fixtures for the Dagster tests: a resource on this run's database, and rows made the way the API makes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import build_sensor_context

from nmdc_runtime.config import Settings
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.db import Database
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Job, JobInput, Workflow
from nmdc_runtime.store import accounts

SHA = "a" * 64


@pytest.fixture
def runtime(settings: Settings, clean_database: Database) -> RuntimeDatabase:
    """The resource the sensors take, on this run's (emptied-after-use) database."""
    return RuntimeDatabase.from_settings(settings)


@pytest.fixture
def site(clean_database: Database) -> str:
    """A data site."""
    with clean_database.session() as session:
        accounts.create_site(session, site_id="site-d", name="Site D", capabilities=[])
    return "site-d"


@pytest.fixture
def make_workflow(clean_database: Database) -> Callable[..., str]:
    """`make_workflow("wf-1", ["metagenome"], enabled=True, config={...})` inserts a workflow."""

    def make(
        workflow_id: str, data_types: list[str], *, enabled: bool = True, config: dict | None = None
    ) -> str:
        with clean_database.session() as session:
            session.add(
                Workflow(
                    id=workflow_id,
                    name=workflow_id,
                    version="1.0",
                    data_types=data_types,
                    required_capabilities=[],
                    config=config or {"threads": 4},
                    enabled=enabled,
                )
            )
        return workflow_id

    return make


@pytest.fixture
def make_data_resources(clean_database: Database, site: str) -> Callable[..., list[str]]:
    """`make_data_resources("metagenome", n=3)` registers data resources of site-d; returns their ids."""

    def make(data_type: str, n: int = 1) -> list[str]:
        ids = [new_id("dr") for _ in range(n)]
        with clean_database.session() as session:
            session.add_all(
                DataResource(
                    id=dr_id,
                    site_id=site,
                    name=f"reads {i}.fastq.gz",
                    url=f"https://site-d.example.org/data/{dr_id}",
                    data_type=data_type,
                    size=1000 + i,
                    checksums=[{"type": "sha256", "checksum": SHA}],
                    description=None if i % 2 else "paired-end reads",
                )
                for i, dr_id in enumerate(ids)
            )
        return ids

    return make


def tick(sensor, runtime: RuntimeDatabase, cursor: str | None = None) -> Any:
    """Evaluate a sensor once, as the daemon would, with `runtime` as its resource."""
    with build_sensor_context(cursor=cursor, resources={"runtime": runtime}) as context:
        return sensor(context)


def jobs(database: Database) -> list[Job]:
    """Every job, in creation order."""
    with database.session() as session:
        return list(session.scalars(sa.select(Job).order_by(Job.seq)))


def pairs(database: Database) -> list[tuple[str, str]]:
    """(workflow, triggering data resource) of every job, sorted."""
    return sorted((job.workflow_id, job.trigger_data_resource_id) for job in jobs(database))


def job_inputs(database: Database) -> list[tuple[str, str]]:
    with database.session() as session:
        return sorted(session.execute(sa.select(JobInput.job_id, JobInput.data_resource_id)).tuples())
