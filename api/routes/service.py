"""Service endpoints: health and metrics."""

from __future__ import annotations

import os

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from pydantic import BaseModel

from api.deps import CurrentPrincipal, DatabaseDep

router = APIRouter(tags=["service"])


class Health(BaseModel):
    status: str
    database: str


def _ping(database) -> bool:
    try:
        with database.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.SQLAlchemyError:
        return False


# HEAD too: load balancers and uptime checkers often probe with it (kept out of the OpenAPI page).
@router.head("/health", include_in_schema=False)
@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(database: DatabaseDep):
    """Liveness and database reachability; needs no token."""
    if await run_in_threadpool(_ping, database):
        return Health(status="ok", database="ok")
    return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)


def _exposition() -> bytes:
    """The metrics of every API process, or of this one when it runs alone.

    Under `uvicorn --workers N` each worker counts for itself, and a scrape reaches one of them: read
    alone, counters would seem to jump back and forth. With PROMETHEUS_MULTIPROC_DIR set (`make dev` sets
    it) every worker writes its values to files there, and a fresh registry sums them at scrape time.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(_: CurrentPrincipal) -> Response:
    """Prometheus metrics in the text exposition format, summed over the API's worker processes."""
    # Sync: in multiprocess mode this reads one file per worker and metric type.
    return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)
