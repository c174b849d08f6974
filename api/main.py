"""The NMDC Runtime REST API: `create_app()` wires routers, error handlers and middleware."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.login_guard import LoginGuard
from api.middleware import BodyLimitMiddleware, JsonBodyMiddleware, RequestSessions, RequestTelemetry
from api.revocations import Revocations
from api.routes import PUBLIC_ROUTERS, ROUTERS, TAGS
from nmdc_runtime import logs
from nmdc_runtime.auth import VerifiedTokens
from nmdc_runtime.config import Settings, get_settings
from nmdc_runtime.db import Database, release_embedded_server, resolve_urls
from nmdc_runtime.grants import load_grant_keys
from nmdc_runtime.migrations import upgrade

log = logging.getLogger("nmdc_runtime.api")


def create_app(settings: Settings) -> FastAPI:
    """The API for `settings`. The database is opened at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        active = app.state.settings
        url = resolve_urls(active).runtime
        upgrade(url)
        app.state.database = Database(url, deadline_seconds=active.database_timeout_seconds)
        app.state.jwt_key = active.jwt_key()
        app.state.grant_keys = load_grant_keys(
            active.grant_keys.get_secret_value() if active.grant_keys else None, active.home
        )
        app.state.revocations = Revocations(
            app.state.database,
            refresh_seconds=active.revocation_refresh_seconds,
            token_lifetime_seconds=active.token_expire_seconds,
        )
        app.state.revocations.reload()
        app.state.login_guard = LoginGuard(
            max_failures=active.login_max_failures,
            max_failures_per_address=active.login_max_failures_per_address,
            window_seconds=active.login_failure_window_seconds,
            hash_concurrency=active.hash_concurrency,
            queue_limit=active.login_queue_limit,
        )
        refresher = asyncio.create_task(app.state.revocations.keep_fresh())
        log.info("NMDC Runtime API ready")
        try:
            yield
        finally:
            refresher.cancel()
            app.state.login_guard.close()
            app.state.database.dispose()
            if not active.database_url:
                # Here, not at exit: uvicorn ends its process on SIGTERM by raising the signal again with its
                # default action, which runs no exit handler.
                release_embedded_server(active.home)

    app = FastAPI(
        title="NMDC Runtime API",
        version="0.1.0",
        description="Sites register data, claim jobs, report operations and executions.",
        lifespan=lifespan,
        openapi_tags=TAGS,
        # The OpenAPI pages are api/routes/docs.py's, which serve the files FastAPI's would fetch from CDNs.
        docs_url=None,
        redoc_url=None,
        # The API's figures are Prometheus's (api/metrics.py), and no OpenTelemetry provider is set up: left
        # on, FastAPI would look for one on every request to learn that (bench/README.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.policy = settings.policy()
    app.state.verified_tokens = VerifiedTokens()
    errors.install(app)
    for router in ROUTERS:
        # /token and /health answer without a bearer token; everything else shares the error answers.
        app.include_router(router, responses={} if router in PUBLIC_ROUTERS else errors.ERROR_RESPONSES)
    # The last added runs first: the size limit, then (on a body of bounded size) the JSON checks; the
    # sessions are closed after the answer, innermost.
    app.add_middleware(RequestSessions)
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=app.state.settings.max_body_bytes)
    app.add_middleware(RequestTelemetry, log_requests=settings.log_requests)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.main:app` (deployments, `make dev`) gets the app for the environment's settings, made on
    # first access rather than at import, so importing this module reads nothing and starts nothing.
    if name == "app":
        global app
        settings = get_settings()
        logs.configure(settings.log_format)
        app = create_app(settings)
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
