"""What operators get: request ids, one log line per request (text or JSON), and the queue's figures on
/metrics for an admin or Prometheus's scrape token."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api.main import create_app
from tests.integration.claim_world import claim, make_world, new_job
from tests.processes import live_api

SCRAPE_TOKEN = "prometheus-scrape-token-of-some-length"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def scraped(settings, clean_database, admin_headers):
    """An app with a scrape token, and a world with 3 jobs, one of them claimed."""
    with TestClient(
        create_app(settings.model_copy(update={"metrics_token": SecretStr(SCRAPE_TOKEN)}))
    ) as client:
        world = make_world(client, clean_database, admin_headers, settings)
        jobs = [new_job(world) for _ in range(3)]
        assert claim(client, world.site_e, jobs[0]["id"]).status_code == 201
        yield client, world


def test_metrics_carry_the_queues_figures_for_an_admin_or_the_scrape_token(scraped):
    client, world = scraped
    response = client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert response.status_code == 200, response.text
    samples = _samples(response.text)
    assert samples[("nmdc_jobs", (("status", "unclaimed"),))] == 2
    assert samples[("nmdc_jobs", (("status", "claimed"),))] == 1
    assert samples[("nmdc_jobs", (("status", "failed"),))] == 0
    assert samples[("nmdc_open_operations", ())] == 1
    assert samples[("nmdc_lapsed_leases", ())] == 0
    assert samples[("nmdc_operations", (("state", "running"),))] == 1
    assert samples[("nmdc_database_up", ())] == 1
    assert samples[("nmdc_claim_latency_seconds_count", ())] >= 1
    assert samples[("nmdc_oldest_unclaimed_job_age_seconds", ())] >= 0
    assert ("nmdc_data_resources_waiting", ()) in samples
    # Executions are never deleted, so their number is a counter, named as Prometheus names counters.
    assert samples[("nmdc_executions_total", ())] == 0
    assert {f.name: f.type for f in text_string_to_metric_families(response.text)}[
        "nmdc_executions"
    ] == "counter"
    # An admin's token still works; a site's, a plain user's, or a wrong scrape token does not.
    assert client.get("/metrics", headers=world.admin).status_code == 200
    assert client.get("/metrics", headers=world.site_e).status_code == 403
    assert client.get("/metrics", headers=world.user).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
    assert client.get("/metrics").status_code == 401


def test_routes_are_labelled_by_their_template_the_openapi_pages_included(scraped):
    client, world = scraped
    for path in ("/docs", "/openapi.json", "/no/such/path"):
        client.get(path)
    samples = _samples(client.get("/metrics", headers=world.admin).text)
    routes = {dict(labels).get("route") for (name, labels) in samples if name == "nmdc_http_requests_total"}
    assert {"/docs", "/openapi.json", "/jobs/{job_id}:claim", "unmatched"} <= routes
    assert not any(route and "job-" in route for route in routes), routes


def test_a_sane_request_id_is_kept_and_anything_else_replaced(client):
    assert client.get("/health", headers={"X-Request-ID": "trace.42:a-b_c"}).headers["X-Request-ID"] == (
        "trace.42:a-b_c"
    )
    for bad in ("", "has space", "x" * 129, "semi;colon"):
        made = client.get("/health", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", made), bad
    first = client.get("/health").headers["X-Request-ID"]
    assert first != client.get("/health").headers["X-Request-ID"]


@pytest.mark.e2e
def test_a_real_api_logs_one_json_line_per_request_with_its_request_id(settings, clean_database, tmp_path):
    home = tmp_path / "home"
    with live_api(settings, home, NMDC_LOG_FORMAT="json") as url:
        assert (
            httpx.get(url + "/jobs/job-nosuch", headers={"X-Request-ID": "req-77"}, timeout=10).status_code
            == 401
        )
    lines = [json.loads(line) for line in (home / "api.log").read_text().splitlines() if line.startswith("{")]
    (request,) = [line for line in lines if line.get("request_id") == "req-77"]
    assert request["logger"] == "nmdc_runtime.requests"
    assert (request["method"], request["path"], request["route"], request["status"]) == (
        "GET",
        "/jobs/job-nosuch",
        "/jobs/{job_id}",
        401,
    )
    assert request["duration_ms"] >= 0 and request["level"] == "INFO"
    # uvicorn's own access log is replaced by that line, and its other lines are JSON too.
    assert not any(line.get("logger") == "uvicorn.access" for line in lines)
    assert any(line.get("logger") == "uvicorn.error" for line in lines)
