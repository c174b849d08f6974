"""Service endpoints: health and metrics."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
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


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(database: DatabaseDep):
    """Liveness and database reachability; needs no token."""
    if await run_in_threadpool(_ping, database):
        return Health(status="ok", database="ok")
    return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)


@router.get("/metrics", response_class=Response)
async def metrics(_: CurrentPrincipal) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
