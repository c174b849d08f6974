"""Prometheus metrics: HTTP figures counted by each API process, and the domain's figures read at scrape time.

Under `uvicorn --workers N` each worker counts for itself, and a scrape reaches one of them: read alone,
counters would seem to jump back and forth. With PROMETHEUS_MULTIPROC_DIR set (`make dev` sets it) every worker
writes its values to files there, and a fresh registry sums them at scrape time. The domain figures (jobs by
status, open operations, lapsed leases, ...) are the database's, the same whichever worker answers: one query
per scrape, never per request.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nmdc_runtime.db import Database
from nmdc_runtime.store import drains as drains_store
from nmdc_runtime.store import pipeline as pipeline_store

log = logging.getLogger("nmdc_runtime.api")

REQUESTS = Counter("nmdc_http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram(
    "nmdc_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CLAIM_LATENCY = Histogram(
    "nmdc_claim_latency_seconds",
    "Time from a job's creation to its claim (each new claim, retries after a lapse included).",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
)


class DomainCollector(Collector):
    """The queue's figures, read from the database at each scrape (`store.pipeline.runtime_status`), and the
    drained sites (`store.drains.drained_sites`, `drain_after` faults in a row draining one)."""

    def __init__(self, database: Database, *, drain_after: int) -> None:
        self.database = database
        self.drain_after = drain_after

    def collect(self):
        up = GaugeMetricFamily("nmdc_database_up", "1 when the scrape could read the runtime database.")
        now = datetime.now(UTC)
        try:
            with self.database.sessionmaker() as session:
                status = pipeline_store.runtime_status(session, now=now)
                finished = pipeline_store.operations_by_state(session)
                drained = drains_store.drained_sites(session, drain_after=self.drain_after)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: the database could not be read: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("nmdc_jobs", "Jobs by status.", labels=["status"])
        for name in ("unclaimed", "claimed", "succeeded", "failed", "canceled"):
            jobs.add_metric([name], status["jobs_by_status"].get(name, 0))
        yield jobs
        operations = GaugeMetricFamily(
            "nmdc_operations",
            "Operations by state (finished ones are kept NMDC_OPERATION_RETENTION_SECONDS).",
            labels=["state"],
        )
        for state, count in sorted(finished.items()):
            operations.add_metric([state], count)
        yield operations
        for name, help_text, value in (
            ("nmdc_open_operations", "Operations not finished.", status["open_operations"]),
            (
                "nmdc_lapsed_leases",
                "Open operations whose lease lapsed, not ended yet.",
                status["lapsed_leases"],
            ),
            (
                "nmdc_data_resources_waiting",
                "Data resources the sensor has not matched to workflows yet.",
                status["unmatched_data_resources"],
            ),
            (
                "nmdc_workflows_waiting_backfill",
                "Enabled workflows whose backfill has not finished.",
                status["pending_backfills"],
            ),
            (
                "nmdc_oldest_unclaimed_job_age_seconds",
                "Age of the oldest unclaimed job (0 when none).",
                (now - status["oldest_unclaimed_job"]).total_seconds()
                if status["oldest_unclaimed_job"]
                else 0,
            ),
            ("nmdc_drained_sites", "Sites drained: they claim no new job until lifted.", len(drained)),
        ):
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], value)
            yield gauge
        # Executions are kept for good, so their number only grows: a counter (`nmdc_executions_total`),
        # which lets Prometheus's rate() give executions per second.
        yield CounterMetricFamily("nmdc_executions", "Executions recorded.", value=status["executions"])


def exposition(database: Database, *, drain_after: int) -> bytes:
    """The text exposition: every API process's HTTP figures (see the module docstring) and the domain's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Everything())
    registry.register(DomainCollector(database, drain_after=drain_after))
    return generate_latest(registry)


class _Everything(Collector):
    """This process's default registry, inside a registry of its own (so the domain collector joins it per
    scrape without being registered for good)."""

    def collect(self):
        yield from REGISTRY.collect()
