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

# What the API's claim sends for an unclaimed job (nmdc_runtime/services/claims.py), written out once more
# in plain SQL: the job row locked, its open operation locked, the claim's terms, the new operation, the job.
_LOCK_JOB = "SELECT * FROM jobs WHERE id = %s FOR UPDATE"
_OPEN_OPERATION = "SELECT * FROM operations WHERE job_id = %s AND NOT done FOR UPDATE"
_TERMS = (
    "SELECT (SELECT capabilities FROM sites WHERE id = %s), required_capabilities, lease_seconds "
    "FROM workflows WHERE id = %s"
)
_INSERT_OPERATION = (
    "INSERT INTO operations (id, job_id, site_id, workflow_id, attempt, state, done, cancel_requested, "
    "lease_expire_time, lease_seconds, create_time, update_time) "
    "VALUES (%s, %s, %s, %s, %s, 'running', false, false, %s, %s, %s, %s) RETURNING *"
)
_UPDATE_JOB = "UPDATE jobs SET status = 'claimed', attempts = %s, updated_at = %s WHERE id = %s"


def claim(connection, job_id: str, site_id: str) -> dict | None:
    """Claim an unclaimed job for a site with the statements the API's claim sends; the new operation, or
    None when the job was not claimable (the transaction is rolled back then)."""
    now = datetime.now(UTC)
    with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
        cursor.execute(_LOCK_JOB, (job_id,))
        job = cursor.fetchone()
        cursor.execute(_OPEN_OPERATION, (job_id,))
        holder = cursor.fetchone()
        cursor.execute(_TERMS, (site_id, job["workflow_id"]))
        terms = cursor.fetchone()
        if job["status"] != "unclaimed" or holder is not None or terms["capabilities"] is None:
            connection.rollback()
            return None
        lease = terms["lease_seconds"] or 3600
        attempt = job["attempts"] + 1
        cursor.execute(
            _INSERT_OPERATION,
            (
                f"op-{uuid.uuid4().hex}",
                job_id,
                site_id,
                job["workflow_id"],
                attempt,
                now + timedelta(seconds=lease),
                lease,
                now,
                now,
            ),
        )
        operation = cursor.fetchone()
        cursor.execute(_UPDATE_JOB, (attempt, now, job_id))
    connection.commit()
    return operation


def connect(dsn: str):
    """A psycopg2 connection as the API's engine makes them (times in UTC)."""
    return psycopg2.connect(dsn, options="-c timezone=UTC")


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
    pool = psycopg2.pool.ThreadedConnectionPool(1, 40, dsn, options="-c timezone=UTC")
    bare = FastAPI()

    @bare.post("/jobs/{job_id}:claim", status_code=201)
    def claim_job(job_id: str) -> dict:
        connection = pool.getconn()
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
