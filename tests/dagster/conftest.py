"""Fixtures for the Dagster tests: a resource on this run's database, and rows made the way the API makes them."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import build_sensor_context

from nmdc_runtime.config import Settings
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.db import Database
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Execution, Job, JobInput, Operation, Workflow
from nmdc_runtime.store import accounts as accounts_store

SHA = "a" * 64


@pytest.fixture(autouse=True)
def signal_handlers() -> Iterator[None]:
    """Put back what SIGINT and SIGTERM do after each test.

    Evaluating a sensor, Dagster maps SIGTERM to whatever SIGINT does and leaves it so: in a test run started in
    the background (SIGINT ignored), the worker then ignored SIGTERM, and so did every process it started later
    (tests/e2e/test_embedded_server.py's `nmdc-runtime db shell` never stopped on SIGTERM).
    """
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def runtime(settings: Settings, clean_database: Database) -> RuntimeDatabase:
    """The resource the sensors take, on this run's (emptied-after-use) database."""
    return RuntimeDatabase(settings)


def unreachable(settings: Settings) -> RuntimeDatabase:
    """A resource whose database refuses connections (nothing listens on port 9)."""
    return RuntimeDatabase(
        settings.model_copy(update={"database_url": "postgresql+psycopg2://nmdc@127.0.0.1:9/nmdc"})
    )


@pytest.fixture
def site(clean_database: Database) -> str:
    """A data site."""
    with clean_database.session() as session:
        accounts_store.create_site(session, site_id="site-d", name="Site D", capabilities=[])
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


def claimed_job(
    session,
    *,
    lease_expire_time: datetime,
    done: bool = False,
    expire_time: datetime | None = None,
    max_attempts: int = 3,
) -> Operation:
    """A job of wf-1 claimed by site-d (attempt 1), and its operation: running, or done with a succeeded
    execution. The workflow and site must exist."""
    job = Job(
        id=new_id("job"),
        workflow_id="wf-1",
        config={},
        max_attempts=max_attempts,
        status="succeeded" if done else "claimed",
        attempts=1,
    )
    session.add(job)
    session.flush()
    op = Operation(
        id=new_id("op"),
        job_id=job.id,
        site_id="site-d",
        workflow_id="wf-1",
        attempt=1,
        state="succeeded" if done else "running",
        done=done,
        lease_expire_time=lease_expire_time,
        lease_seconds=60,
        expire_time=expire_time,
    )
    if done:
        op.result_execution_id = recorded_execution(session, op, ended_at=lease_expire_time).id
    session.add(op)
    session.flush()
    return op


def recorded_execution(session, op: Operation, *, status: str = "succeeded", ended_at: datetime) -> Execution:
    """An execution the holder of `op` recorded under it, of an hour's run."""
    execution = Execution(
        id=new_id("exec"),
        job_id=op.job_id,
        site_id=op.site_id,
        operation_id=op.id,
        workflow_id=op.workflow_id,
        status=status,
        started_at=ended_at - timedelta(hours=1),
        ended_at=ended_at,
    )
    session.add(execution)
    session.flush()
    return execution
