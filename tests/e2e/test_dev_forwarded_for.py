"""`make dev`'s API believes `X-Forwarded-For` only from NMDC_TRUSTED_PROXIES: a local client that makes up a
new address with each failed login is still counted under its own address by the login limits.

The API is started with the very command line `make dev` (`nmdc_runtime.devserver.run`) builds for these
settings, captured rather than copied, then run as a real uvicorn process.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nmdc_runtime import devserver
from nmdc_runtime.config import Settings
from tests.processes import REPO, _serving, free_port

pytestmark = pytest.mark.e2e

MAX_FAILURES = 3


class _Exited:
    """Stands in for a started child: already exited, so `devserver.run` stops at once."""

    pid = 0
    returncode = 0

    def poll(self) -> int:
        return 0


def make_dev_api(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], dict[str, str]]:
    """The argv and environment `make dev` starts its API with, for `settings`."""
    started: dict[str, tuple[list[str], dict[str, str]]] = {}

    def start(name, argv, env, cwd=REPO, **_options):
        started[name] = (argv, env)
        return _Exited()

    with monkeypatch.context() as patch:
        patch.setattr(devserver, "_start", start)
        patch.setattr(devserver, "stop_group", lambda *args, **kwargs: None)
        patch.setattr(signal, "signal", lambda *args: None)  # run() would take over the test's signals
        devserver.run(settings)
    return started["api"]


@pytest.fixture
def dev_api(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    dev_settings = settings.model_copy(
        update={"home": tmp_path / "home", "api_port": port, "api_workers": 1, "trusted_proxies": []}
    )
    argv, env = make_dev_api(dev_settings, monkeypatch)
    assert "--no-proxy-headers" in argv  # with no proxy named, uvicorn believes nobody's headers
    # A low limit, so that a few failures show where they are counted.
    env = {**env, "NMDC_LOGIN_MAX_FAILURES": str(MAX_FAILURES), "NMDC_JWT_SECRET": "k-" + "0123456789" * 4}
    with _serving(
        "make dev's API",
        argv,
        cwd=REPO,
        env=env,
        log_path=tmp_path / "api.log",
        probe=f"http://127.0.0.1:{port}/health",
        stop_timeout=3,  # thrown away after the test: no need to wait out a graceful shutdown
    ):
        yield f"http://127.0.0.1:{port}"


def test_a_spoofed_forwarded_address_does_not_reset_the_login_limits(dev_api: str):
    form = {"grant_type": "password", "username": "mallory", "password": "wrong-password"}
    statuses = []
    with httpx.Client(base_url=dev_api, timeout=30) as client:
        for n in range(MAX_FAILURES + 1):
            # A new made-up address each time: were it believed, each would start a count of its own.
            forged = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
            statuses.append(client.post("/token", data=form, headers=forged).status_code)
    assert statuses == [401] * MAX_FAILURES + [429]
