"""The two baselines of the claim: the same SQL as the API's claim, run by a bare FastAPI app (no auth, no
middleware, no ORM: what the framework costs) and straight through psycopg2 from threads (what the database
costs).

    BENCH_DSN=... BENCH_SITE=... uvicorn bench.bare:app      # the bare app (bench/paths.py starts it)
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg2
import psycopg2.extras
import psycopg2.pool

from nmdc_runtime.config import Settings
from nmdc_runtime.store import operations as operations_store

# What the API's claim sends for an unclaimed job (nmdc_runtime/services/claims.py, `_claim_unclaimed`), in
# autocommit as there: the store's own two statements, as compiled for psycopg2.
_JOB_AND_TERMS = operations_store._JOB_AND_TERMS
_CLAIM_AS_SEEN = operations_store._CLAIM_AS_SEEN
DRAIN_AFTER = Settings.model_fields["site_drain_after"].default


def claim(connection, job_id: str, site_id: str) -> dict | None:
    """Claim an unclaimed job for a site with the statements the API's claim sends (the connection in
    autocommit); the new operation, or None when the job was not claimable."""
    now = datetime.now(UTC)
    with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
        # The drain is read as the API reads it (the sites here never fault: it never refuses).
        cursor.execute(_JOB_AND_TERMS, {"site_key": site_id, "job_key": job_id, "drain_after": DRAIN_AFTER})
        job = cursor.fetchone()
        if job is None or job["status"] != "unclaimed" or job["anon_1"] is None:
            return None
        lease = job["lease_seconds"] or 3600
        attempt = job["attempts"] + 1
        operation = {
            "id": f"op-{uuid.uuid4().hex}",
            "site_id": site_id,
            "workflow_id": job["workflow_id"],
            "attempt": attempt,
            "state": "running",
            "done": False,
            "extra_metadata": "{}",
            "cancel_requested": False,
            "lease_expire_time": now + timedelta(seconds=lease),
            "lease_seconds": lease,
            "create_time": now,
            "update_time": now,
        }
        cursor.execute(
            _CLAIM_AS_SEEN,
            {
                **{f"op_{key}": value for key, value in operation.items()},
                "job_key": job_id,
                "job_seen_status": "unclaimed",
                "job_seen_attempts": job["attempts"],
                "job_status": "claimed",
                "job_attempts": attempt,
                "job_updated_at": now,
            },
        )
        return cursor.fetchone()


def connect(dsn: str):
    """A psycopg2 connection as the API's engine makes them (times in UTC), in autocommit."""
    connection = psycopg2.connect(dsn, options="-c timezone=UTC")
    connection.autocommit = True
    return connection


def sql_claims(dsn: str, site_id: str, job_ids: list[str], *, threads: int, seconds: float) -> dict:
    """Claims straight through psycopg2: `threads` threads, one connection each, distinct jobs, for `seconds`."""
    jobs: queue.SimpleQueue[str] = queue.SimpleQueue()
    for job_id in job_ids:
        jobs.put(job_id)
    counts = [0] * threads
    ran_out = threading.Event()
    stop = time.monotonic() + seconds

    def work(index: int) -> None:
        connection = connect(dsn)
        try:
            while time.monotonic() < stop:
                try:
                    job_id = jobs.get_nowait()
                except queue.Empty:
                    ran_out.set()
                    return
                if claim(connection, job_id, site_id) is None:
                    raise RuntimeError(f"job {job_id} was not claimable")
                counts[index] += 1
        finally:
            connection.close()

    started = time.monotonic()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    took = time.monotonic() - started
    if ran_out.is_set():
        raise RuntimeError(f"the {len(job_ids)} jobs ran out before {seconds} s")
    return {"claims": sum(counts), "seconds": round(took, 2), "per_s": round(sum(counts) / took, 1)}


def _app():
    from fastapi import FastAPI, HTTPException

    dsn, site_id = os.environ["BENCH_DSN"], os.environ["BENCH_SITE"]
    # psycopg2's pool closes every connection put back beyond `minconn`: keep them all, as the API's pool
    # keeps its connections (else each request past the first would connect anew).
    pool = psycopg2.pool.ThreadedConnectionPool(40, 40, dsn, options="-c timezone=UTC")

    def checkout():
        connection = pool.getconn()
        connection.autocommit = True
        return connection

    bare = FastAPI()

    @bare.post("/jobs/{job_id}:claim", status_code=201)
    def claim_job(job_id: str) -> dict:
        connection = checkout()
        try:
            operation = claim(connection, job_id, site_id)
        finally:
            pool.putconn(connection)
        if operation is None:
            raise HTTPException(409, "not claimable")
        return operation

    @bare.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    return bare


def __getattr__(name: str):
    # `uvicorn bench.bare:app`: made on first access, so importing this module (the SQL baseline) needs no
    # environment.
    if name == "app":
        global app
        app = _app()
        return app
    raise AttributeError(name)
