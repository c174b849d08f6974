"""The whole path through real processes: a data resource registered over the API becomes, through the
Dagster daemon's sensor, a job another site can claim; its execution shows up as a Dagster asset event.

Processes: uvicorn (the API) and `dagster-daemon run` (with its code server), on this test run's runtime
and Dagster databases, with a DAGSTER_HOME in a temporary folder holding the repository's dagster.yaml.
Each runs in a session of its own and is stopped as a process group, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database
from nmdc_runtime.models import Job, Workflow
from nmdc_runtime.services import accounts as accounts_service
from nmdc_runtime.store import accounts as accounts_store
from tests.processes import BIN, REPO, live_api, runtime_env, stop_group, wait_for

pytestmark = pytest.mark.e2e

JOB_TIMEOUT = 90.0


def site_credentials(database: Database, site_id: str, capabilities: list[str]) -> dict[str, str]:
    with database.session() as session:
        accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=capabilities)
        client, secret = accounts_service.generate_credentials(session, site_id=site_id, actor="tests")
    return {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret}


def test_registered_data_resource_becomes_a_claimable_job(
    settings: Settings, clean_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env = runtime_env(settings, tmp_path / "nmdc_home", DAGSTER_HOME=str(dagster_home))
    with (tmp_path / "daemon.log").open("w") as log:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=dagster_home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stop_group, daemon)
        api = cleanup.enter_context(live_api(settings, tmp_path / "api_home"))
        data_site = site_credentials(clean_database, "site-d", [])
        exec_site = site_credentials(clean_database, "site-e", ["assembly"])
        with clean_database.session() as session:
            session.add(
                Workflow(
                    id="wf-assembly",
                    name="assembly",
                    version="1",
                    data_types=["metagenome"],
                    required_capabilities=["assembly"],
                    config={"threads": 2},
                )
            )
        with httpx.Client(base_url=api, timeout=10) as http:

            def token(form: dict[str, str]) -> dict[str, str]:
                response = http.post("/token", data=form)
                assert response.status_code == 200, response.text
                return {"Authorization": f"Bearer {response.json()['access_token']}"}

            as_d, as_e = token(data_site), token(exec_site)
            registered = time.monotonic()
            response = http.post(
                "/data_resources",
                headers=as_d,
                json={
                    "name": "sample-1.fastq.gz",
                    "url": "https://site-d.example.org/sample-1.fastq.gz",
                    "data_type": "metagenome",
                    "size": 123,
                    "checksums": [{"type": "sha256", "checksum": "b" * 64}],
                },
            )
            assert response.status_code == 201, response.text
            data_resource = response.json()

            def claimable() -> dict | None:
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
                page = http.get("/jobs", params={"claimable": "true"}, headers=as_e)
                assert page.status_code == 200, page.text
                for job in page.json()["resources"]:
                    if [dr["id"] for dr in job["config"]["data_resources"]] == [data_resource["id"]]:
                        return job
                return None

            job = wait_for(claimable, JOB_TIMEOUT, "a claimable job for the data resource")
            latency = time.monotonic() - registered
            print(f"data resource registered -> job claimable: {latency:.1f} s")
            assert job["workflow_id"] == "wf-assembly"
            assert job["config"]["threads"] == 2
            with clean_database.session() as session:
                created_by = session.scalar(sa.select(Job.created_by).where(Job.id == job["id"]))
            assert created_by.startswith("dagster:sensor:data_resources_sensor:tick:"), created_by

            # The job is on the `jobs` asset of its workflow in Dagster's storage, i.e. in the UI.
            monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
            monkeypatch.setenv("NMDC_DAGSTER_DATABASE_URL", settings.dagster_database_url)
            with DagsterInstance.get() as instance:

                def materialized(key: str):
                    event = instance.get_latest_materialization_event(AssetKey(key))
                    return event.asset_materialization if event else None

                event = wait_for(lambda: materialized("jobs"), 30, "the jobs materialization")
                assert event.partition == "wf-assembly"
                assert job["id"] in event.metadata["job_ids"].value

                # Claim, and register an execution: it shows up as an `executions` event.
                claim = http.post(f"/jobs/{job['id']}:claim", headers=as_e)
                assert claim.status_code == 201, claim.text
                now = datetime.now(UTC).isoformat()
                execution = http.post(
                    f"/jobs/{job['id']}/executions",
                    headers=as_e,
                    json={
                        "operation_id": claim.json()["id"],
                        "status": "succeeded",
                        "started_at": now,
                        "ended_at": now,
                        "outputs": [],
                    },
                )
                assert execution.status_code == 201, execution.text
                event = wait_for(lambda: materialized("executions"), 30, "the executions materialization")
                metadata = {k: v.value for k, v in event.metadata.items()}
                assert metadata["workflow_id"] == "wf-assembly"
                assert metadata["api_path"] == f"/jobs/{job['id']}/executions/{execution.json()['id']}"
                assert metadata["site_id"] == "site-e"
    daemon_log = (tmp_path / "daemon.log").read_text()
    assert "dagster.yaml" not in daemon_log and "telemetry" not in daemon_log.lower(), daemon_log
