"""Rules of `nmdc-site run` that need no server: the heartbeat's cadence, the idle message's rhythm, the
command's executable, and leaving on a stop request."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from nmdc_site.cli import _until_stopped
from nmdc_site.client import Operation
from nmdc_site.run.command import executable
from nmdc_site.run.errors import SiteFault
from nmdc_site.run.heartbeat import Heartbeat, heartbeat_interval, lease_seconds
from nmdc_site.run.loop import IdleLog


def operation(lease: float, *, renewed_ago: float = 0.0, paused: bool = False) -> Operation:
    """An operation as the server answers it: renewed `renewed_ago` seconds ago with a `lease`-second lease."""
    created = datetime.now(UTC) - timedelta(hours=1)
    renewed = datetime.now(UTC) - timedelta(seconds=renewed_ago)
    return Operation.model_validate(
        {
            "id": "op-1",
            "done": False,
            "create_time": created.isoformat(),
            "update_time": renewed.isoformat(),
            "metadata": {
                "job_id": "job-1",
                "site_id": "site-e",
                "workflow_id": "w",
                "state": "running",
                "lease_expire_time": (renewed + timedelta(seconds=lease)).isoformat(),
                "cancel_requested": False,
                "paused": paused,
            },
        }
    )


@pytest.mark.parametrize(
    ("lease", "interval"),
    [(1.5, 0.5), (6, 2.0), (90, 30.0), (3600, 30.0), (86400, 30.0)],
)
def test_heartbeats_come_every_third_of_the_operation_s_own_lease_at_most_every_30_s(lease, interval):
    op = operation(lease, renewed_ago=lease / 2)
    # The lease length, not what is left of it: an hour-long lease half gone still beats every 30 s.
    assert lease_seconds(op) == pytest.approx(lease)
    assert heartbeat_interval(lease_seconds(op)) == pytest.approx(interval)
    assert Heartbeat(None, op).interval == pytest.approx(interval)


def test_the_lease_length_the_server_states_comes_first():
    # An admin's pause or cancel moves update_time without renewing: the stated length still holds.
    op = operation(3600, renewed_ago=3000)
    op.update_time = datetime.now(UTC)
    op.metadata.lease_seconds = 3600
    assert lease_seconds(op) == 3600 and Heartbeat(None, op).interval == 30.0


def test_the_lease_deadline_follows_the_claim_and_a_pause_never_lapses():
    fresh = Heartbeat(None, operation(60))
    assert 59 < fresh.remaining() <= 60
    # A claim held from before (a restart): only what the server says is left of its lease.
    resumed = Heartbeat(None, operation(60, renewed_ago=45), new=False)
    assert 13 < resumed.remaining() <= 15
    fresh._renewed(operation(60, paused=True), time.monotonic())
    assert fresh.remaining() == math.inf
    fresh._renewed(operation(60), time.monotonic() - 10)
    assert 49 < fresh.remaining() <= 50


def test_a_stopped_heartbeat_gives_up_retrying_at_once():
    beat = Heartbeat(None, operation(60))
    policy = beat.retry_policy()
    assert policy.attempts is None and policy.deadline() > time.monotonic() + 50
    beat.stop()
    assert policy.deadline() == -math.inf


def test_no_work_is_said_at_once_then_only_now_and_then(caplog):
    caplog.set_level(logging.INFO, logger="nmdc_site.run")
    idle = IdleLog("stats", poll_interval=5, every=0.3)
    for _ in range(5):
        idle.empty()
    assert [r.getMessage() for r in caplog.records] == [
        "no claimable job for stats (1 look; looking every 5 s)"
    ]
    time.sleep(0.35)
    idle.empty()
    assert caplog.records[-1].getMessage() == "no claimable job for stats (5 looks; looking every 5 s)"
    idle.found()
    idle.empty()
    assert len(caplog.records) == 3


def test_the_command_s_executable_is_resolved_or_named_as_the_site_s_fault(tmp_path, monkeypatch):
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SiteFault, match="the command's executable tool is not found on PATH"):
        executable(["tool", "{inputs}"])  # not executable yet: PATH skips it
    with pytest.raises(SiteFault, match=f"the command's executable {tool} is not executable"):
        executable([str(tool)])
    tool.chmod(0o755)
    assert executable(["tool", "{inputs}"]) == str(tool)
    assert executable([str(tool)]) == str(tool)
    with pytest.raises(SiteFault, match=f"the command's executable {tmp_path} is not a file"):
        executable([str(tmp_path)])
    with pytest.raises(SiteFault, match=f"{tmp_path / 'gone'} does not exist"):
        executable([str(tmp_path / "gone")])
    with pytest.raises(SiteFault, match="no command to run"):
        executable(["{inputs}"])


def test_a_stop_request_leaves_work_that_does_not_wind_down_behind():
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert _until_stopped(lambda: threading.Event().wait(60) or 0, stop, grace=0.5) == 130
    assert time.monotonic() - started < 1.5
    # Work that ends in time gives its own status; what it raises is raised.
    assert _until_stopped(lambda: 3, threading.Event()) == 3
    with pytest.raises(SiteFault):
        _until_stopped(lambda: executable(["{inputs}"]), threading.Event())
