"""The runtime_health sensor: runtime_status recorded without a run, and asset checks that turn red."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dagster import AssetCheckKey, AssetCheckSeverity, AssetSelection, SensorResult, materialize

from nmdc_runtime.dagster.assets import JOBS, OPERATIONS, RUNTIME_STATUS, external_assets, runtime_status
from nmdc_runtime.dagster.checks import SPECS, runtime_health_checks
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.dagster.sensors.health import runtime_health_sensor
from nmdc_runtime.domain.operations import finish_operation
from nmdc_runtime.domain.states import OperationState
from nmdc_runtime.ids import new_id
from nmdc_runtime.models import DataResource, Job, SiteEnding
from nmdc_runtime.store import accounts as accounts_store
from tests.dagster.conftest import claimed_job, tick, unreachable

runtime_health = runtime_health_sensor(60)


def _run(runtime: RuntimeDatabase) -> tuple[dict, dict]:
    """One tick: (runtime_status metadata, {check name: evaluation})."""
    result = tick(runtime_health, runtime)
    assert isinstance(result, SensorResult)
    (status, *checks) = result.asset_events
    assert status.asset_key == RUNTIME_STATUS
    return {k: v.value for k, v in status.metadata.items()}, {c.check_name: c for c in checks}


def _failing(checks: dict) -> set[str]:
    return {name for name, evaluation in checks.items() if not evaluation.passed}


def _end(session, op, state: OperationState, code: str = "INTERNAL") -> None:
    job = session.get(Job, op.job_id)
    finish_operation(
        op,
        job,
        state=state,
        now=datetime.now(UTC),
        retention_seconds=3600,
        error={"code": code, "message": "m"},
    )
    session.flush()


@pytest.fixture
def world(clean_database, make_workflow, site):
    make_workflow("wf-1", ["metagenome"])


def test_a_quiet_runtime_is_green_and_every_check_is_evaluated(runtime, world):
    result = tick(runtime_health, runtime)
    status, checks = _run(runtime)
    assert set(checks) == {spec.name for spec in SPECS}
    assert _failing(checks) == set()
    assert {(c.asset_key, c.check_name) for c in checks.values()} == {(s.asset_key, s.name) for s in SPECS}
    assert status["jobs_unclaimed"] == 0 and status["operations_ended_last_hour"] == 0
    assert result.skip_reason.skip_message == (
        "recorded runtime_status (0 unclaimed jobs, 0 open operations); checks: 7 passed"
    )


def test_a_lease_lapsed_past_the_grace_and_not_reaped_is_red(runtime, clean_database, world):
    now = datetime.now(UTC)
    with clean_database.session() as session:
        claimed_job(session, lease_expire_time=now - timedelta(seconds=5))
    status, checks = _run(runtime)
    # Lapsed a moment ago: the reaper has not had its turn yet.
    assert status["lapsed_leases"] == 1 and status["lapsed_leases_overdue"] == 0
    assert checks["lapsed_leases_reaped"].passed

    with clean_database.session() as session:
        claimed_job(
            session,
            lease_expire_time=now - timedelta(seconds=runtime.settings.check_lapsed_lease_seconds + 30),
        )
    status, checks = _run(runtime)
    assert _failing(checks) == {"lapsed_leases_reaped"}
    lapsed = checks["lapsed_leases_reaped"]
    assert lapsed.asset_key == OPERATIONS and lapsed.severity == AssetCheckSeverity.ERROR
    assert lapsed.description.startswith("FAILED: 1 open operation(s) whose lease lapsed more than 60 s ago")


def test_old_unclaimed_jobs_and_waiting_data_resources_are_red(
    clean_database, settings, world, make_data_resources
):
    # Thresholds are the settings the resource carries.
    runtime = RuntimeDatabase(
        settings.model_copy(
            update={"check_unclaimed_job_seconds": 3600, "check_unmatched_data_resource_seconds": 120}
        )
    )
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    (dr,) = make_data_resources("metagenome")
    with clean_database.session() as session:
        session.add(Job(id=new_id("job"), workflow_id="wf-1", config={}, max_attempts=3))
        session.flush()
        session.execute(sa.update(Job).values(created_at=long_ago))
        session.execute(sa.update(DataResource).where(DataResource.id == dr).values(created_at=long_ago))

    status, checks = _run(runtime)

    assert _failing(checks) == {"unclaimed_jobs_claimed", "data_resources_matched"}
    assert {checks[name].asset_key for name in _failing(checks)} == {JOBS}
    assert 7200 <= status["oldest_unclaimed_job_age_seconds"] < 7300
    assert checks["unclaimed_jobs_claimed"].metadata["threshold"].value == 3600
    assert checks["data_resources_matched"].metadata["value"].value >= 7200
    assert status["unmatched_data_resources"] == 1


def test_a_high_share_of_failed_operations_is_red_and_a_job_failed_for_good_warns(
    runtime, clean_database, world
):
    lease = datetime.now(UTC) + timedelta(minutes=5)
    with clean_database.session() as session:
        ok = claimed_job(session, lease_expire_time=lease - timedelta(minutes=10), done=True)
        assert ok.done
        _end(
            session, claimed_job(session, lease_expire_time=lease), OperationState.CANCELED, code="CANCELLED"
        )
    status, checks = _run(runtime)
    # A success and a release: nothing failed.
    assert status["operations_ended_last_hour"] == 2 and status["failed_operations_share_last_hour"] == 0
    assert _failing(checks) == set()

    with clean_database.session() as session:
        failed = claimed_job(session, lease_expire_time=lease, max_attempts=1)
        _end(session, failed, OperationState.FAILED)
    status, checks = _run(runtime)

    # 1 failed of the 2 that ran to an end (the canceled one is not counted): 50% > 25%.
    assert status["failed_operations_share_last_hour"] == 0.5
    assert _failing(checks) == {"failed_operations_share", "jobs_failed_for_good"}
    assert checks["failed_operations_share"].description.startswith("FAILED: 50% of the operations")
    warn = checks["jobs_failed_for_good"]
    assert warn.severity == AssetCheckSeverity.WARN and warn.asset_key == JOBS
    # It names the job, so that staff find it from the jobs asset's Checks tab.
    assert warn.metadata["job_ids"].value == [failed.job_id]
    assert warn.description == (
        "WARNING: 1 job(s) ended failed after their last attempt in the last hour: "
        f"{failed.job_id} (no execution)"
    )
    assert status["jobs_failed_for_good_last_hour"] == 1
    result = tick(runtime_health, runtime)
    assert result.skip_reason.skip_message.endswith(
        "checks: 5 passed, 2 failing: failed_operations_share, jobs_failed_for_good"
    )


def test_drained_sites_are_red_and_named(runtime, clean_database, world):
    drain_after = runtime.settings.site_drain_after
    with clean_database.session() as session:
        for site_id, faults in (("site-b", drain_after), ("site-a", drain_after + 1), ("site-c", 1)):
            accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=[])
            session.add_all(
                SiteEnding(site_id=site_id, fault=True, operation_id=f"op-{site_id}-{n}")
                for n in range(faults)
            )
    status, checks = _run(runtime)
    assert _failing(checks) == {"sites_not_drained"}
    drained = checks["sites_not_drained"]
    assert drained.asset_key == OPERATIONS and drained.severity == AssetCheckSeverity.ERROR
    assert drained.description == "FAILED: 2 drained site(s): site-a, site-b"
    assert (status["drained_sites"], status["drained_site_ids"]) == (2, "site-a, site-b")


def test_staff_can_run_the_same_checks_and_status_from_the_ui(runtime, clean_database, world):
    with clean_database.session() as session:
        claimed_job(session, lease_expire_time=datetime.now(UTC) - timedelta(hours=1))

    result = materialize(
        [*external_assets, runtime_status, runtime_health_checks],
        selection=AssetSelection.assets(runtime_status) | AssetSelection.checks(runtime_health_checks),
        resources={"runtime": runtime},
    )

    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["lapsed_leases_overdue"].value == 1
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {spec.name: spec.name != "lapsed_leases_reaped" for spec in SPECS}

    # One check on its own, as its "Execute" button runs it.
    one = materialize(
        [*external_assets, runtime_health_checks],
        selection=AssetSelection.checks(AssetCheckKey(OPERATIONS, "lapsed_leases_reaped")),
        resources={"runtime": runtime},
    )
    assert [(e.check_name, e.passed) for e in one.get_asset_check_evaluations()] == [
        ("lapsed_leases_reaped", False)
    ]


def test_the_interval_is_the_setting():
    assert runtime_health_sensor(7).minimum_interval_seconds == 7


def test_database_outage_fails_the_tick(settings):
    with pytest.raises(sa.exc.OperationalError):
        tick(
            runtime_health,
            unreachable(settings),
        )
