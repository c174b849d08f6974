"""`GET /metrics` sums every uvicorn worker (prometheus_client multiprocess mode), and says it is text."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

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


@pytest.mark.e2e
def test_metrics_add_up_over_two_workers(settings, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    admin = Principal(kind="user", name="admin", admin=True)
    headers = {"Authorization": f"Bearer {issue_token(admin, key=settings.jwt_key(), expires_in=300)}"}
    with live_api(settings, tmp_path / "home", workers=2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) as url:

        def hit(_: int) -> int:
            # A connection per request, several at once, so that both workers answer some.
            return httpx.get(url + "/health", headers={"Connection": "close"}, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(hit, range(REQUESTS))) == {200}
        workers = {
            m.group(1) for f in metrics_dir.iterdir() if (m := re.match(r"counter_(\d+)\.db$", f.name))
        }
        assert len(workers) == 2, workers
        counts = []
        for _ in range(6):
            # A fresh connection each time: consecutive scrapes may reach either worker.
            response = httpx.get(url + "/metrics", headers={**headers, "Connection": "close"}, timeout=30)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("text/plain")
            counts.append(_health_count(response.text))
            time.sleep(0.05)
    assert counts == sorted(counts), counts
    # Each worker saw only part of them (both wrote counters): the total needs both. At least, since the
    # start-up wait polled /health too.
    assert counts[0] >= REQUESTS, counts


def test_metrics_are_text_plain_in_openapi(client):
    content = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
