"""`GET /metrics` sums every uvicorn worker (prometheus_client multiprocess mode), says it is text, and
follows Prometheus's conventions (`promtool check metrics`, Debian's `prometheus` package)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nmdc_runtime.auth import issue_token
from nmdc_runtime.domain.principals import Principal
from tests.processes import live_api

REQUESTS = 60


def _health_count(text: str) -> float:
    """GET /health requests counted in one scrape, over every status."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "nmdc_http_requests_total"
        and sample.labels.get("route") == "/health"
        and sample.labels.get("method") == "GET"
    )


@dataclass(frozen=True)
class TwoWorkers:
    url: str
    metrics_dir: Path
    headers: dict[str, str]

    def scrape(self) -> str:
        # A fresh connection each time: consecutive scrapes may reach either worker.
        response = httpx.get(
            self.url + "/metrics", headers={**self.headers, "Connection": "close"}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return response.text


@pytest.fixture(scope="module")
def two_workers(settings, tmp_path_factory) -> Iterator[TwoWorkers]:
    """The API as `make dev` runs it: two uvicorn workers summed through PROMETHEUS_MULTIPROC_DIR."""
    tmp_path = tmp_path_factory.mktemp("two_workers")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    admin = Principal(kind="user", name="admin", admin=True)
    headers = {"Authorization": f"Bearer {issue_token(admin, key=settings.jwt_key(), expires_in=300)}"}
    with live_api(settings, tmp_path / "home", workers=2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) as url:
        yield TwoWorkers(url, metrics_dir, headers)


@pytest.mark.e2e
def test_metrics_add_up_over_two_workers(two_workers: TwoWorkers):
    def hit(_: int) -> int:
        # A connection per request, several at once, so that both workers answer some.
        return httpx.get(two_workers.url + "/health", headers={"Connection": "close"}, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(hit, range(REQUESTS))) == {200}
    workers = {
        m.group(1)
        for f in two_workers.metrics_dir.iterdir()
        if (m := re.match(r"counter_(\d+)\.db$", f.name))
    }
    assert len(workers) == 2, workers
    counts = []
    for _ in range(6):
        counts.append(_health_count(two_workers.scrape()))
        time.sleep(0.05)
    assert counts == sorted(counts), counts
    # Each worker saw only part of them (both wrote counters): the total needs both. At least, since the
    # start-up wait polled /health too.
    assert counts[0] >= REQUESTS, counts


def test_metrics_are_text_plain_in_openapi(client):
    content = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]


PROMTOOL = shutil.which("promtool")


@pytest.mark.e2e
@pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool (apt-get install prometheus; `make test` installs it)"
)
def test_metrics_pass_promtool_check(two_workers: TwoWorkers):
    # Requests first, so that every HTTP family has samples to check, not only its help line.
    assert httpx.get(two_workers.url + "/health", timeout=30).status_code == 200
    assert httpx.get(two_workers.url + "/jobs", timeout=30).status_code == 401
    text = two_workers.scrape()
    assert "nmdc_executions_total" in text and "nmdc_http_request_duration_seconds_bucket" in text
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr
    )
