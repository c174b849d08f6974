"""The event log that the repository's dagster.yaml names keeps its connections: the sensors write one or two
asset events per execution, and dagster-postgres's own event log would open a new connection (a new server
process) for each write (nmdc_runtime/dagster/storage.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetKey, AssetObservation, DagsterInstance

from nmdc_runtime.config import Settings
from nmdc_runtime.dagster.storage import MAX_OVERFLOW, POOL_SIZE, PooledPostgresEventLogStorage
from tests.processes import REPO


@pytest.fixture
def instance(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Dagster instance made from the repository's dagster.yaml, on this run's Dagster database."""
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("NMDC_DAGSTER_DATABASE_URL", settings.dagster_database_url)
    with DagsterInstance.from_config(str(tmp_path)) as made:
        yield made


def test_events_are_written_over_a_few_kept_connections(instance):
    storage = instance.event_log_storage
    assert isinstance(storage, PooledPostgresEventLogStorage)
    opened = []
    sa.event.listen(storage._engine, "connect", lambda *_: opened.append(1))
    asset = AssetKey(["pooled_storage_test"])
    for i in range(10):
        instance.report_runless_asset_event(AssetObservation(asset, metadata={"i": i}))
    # Two storage calls per event: twenty connections without a pool.
    assert 1 <= len(opened) <= POOL_SIZE + MAX_OVERFLOW
    records = instance.fetch_observations(asset, limit=20).records
    assert sorted(r.asset_observation.metadata["i"].value for r in records) == list(range(10))
    assert storage._engine.pool.checkedout() == 0
