"""Service endpoints: health, metrics, and the public keys of access grants."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from api.deps import DatabaseDep, GrantKeysDep, MetricsReader, PolicyDep
from api.errors import ErrorBody
from api.metrics import exposition

router = APIRouter(tags=["service"])

# The errors of a text/plain route are JSON all the same. Named by media type: with a `model`, FastAPI would
# document them as the route's own text/plain. (ErrorBody is among the components: other routes use it.)
JSON_ERROR = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}}}


class Health(BaseModel):
    status: str
    database: str


def _ping(database) -> bool:
    try:
        # The autocommit pool: one round trip, where a transaction would add a BEGIN and a ROLLBACK.
        with database.autocommit_engine.connect() as conn:
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
    return JSONResponse(
        {"status": "unavailable", "database": "unreachable"}, status_code=503, headers={"Retry-After": "5"}
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        401: {"description": "Missing, malformed, forged or expired bearer token", "content": JSON_ERROR},
        403: {"description": "Neither a runtime admin nor the scrape token", "content": JSON_ERROR},
    },
)
def metrics(database: DatabaseDep, policy: PolicyDep, _: MetricsReader) -> Response:
    """Prometheus metrics in the text exposition format: HTTP figures summed over the API's worker processes,
    and the queue's figures from the database (`nmdc_jobs{status}`, `nmdc_open_operations`,
    `nmdc_lapsed_leases`, `nmdc_drained_sites`, ...). For a runtime admin's token, or the scrape token
    `NMDC_METRICS_TOKEN`."""
    # Sync: it reads one file per worker and metric type, and queries the database.
    return Response(exposition(database, drain_after=policy.site_drain_after), media_type=CONTENT_TYPE_LATEST)


JWKS_MAX_AGE = 300
"""Seconds a data site (or a cache between) may keep the published keys before asking again."""


@router.get("/.well-known/jwks.json", responses={200: {"description": "A JSON Web Key Set of public keys"}})
async def jwks(keys: GrantKeysDep) -> JSONResponse:
    """The public keys that access grants are signed with (each with its `kid`), so that data sites check
    grants offline; needs no token. Never a private part."""
    return JSONResponse(keys.jwks(), headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"})
