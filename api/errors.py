"""Domain errors and database failures mapped to HTTP answers, in one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from nmdc_runtime.domain import errors

log = logging.getLogger("nmdc_runtime.api")

STATUS_BY_ERROR: list[tuple[type[errors.RuntimeDomainError], int]] = [
    (errors.InvalidInput, 422),
    (errors.NotFound, 404),
    (errors.Forbidden, 403),
    (errors.Conflict, 409),
]


def status_of(exc: errors.RuntimeDomainError) -> int:
    """The HTTP status for a domain error (the first matching class wins)."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400


async def _domain_error(_request: Request, exc: errors.RuntimeDomainError) -> JSONResponse:
    status = status_of(exc)
    if isinstance(exc, errors.InvalidInput) and "field" in exc.details:
        # The same shape as FastAPI's own 422s, so clients read one format.
        loc = [exc.details.get("location", "query"), exc.details["field"]]
        detail = [{"loc": loc, "msg": exc.message, "type": "value_error"}]
    else:
        detail = exc.message
    return JSONResponse({"detail": detail}, status_code=status)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"})


async def _database_refused(request: Request, exc: sa_exc.DBAPIError) -> JSONResponse:
    # Values that passed validation but not the database (e.g. a number out of range): the caller's input.
    if isinstance(exc, sa_exc.IntegrityError):
        log.warning("integrity error during %s %s: %s", request.method, request.url.path, exc.orig)
        return JSONResponse({"detail": "conflicts with the current state"}, status_code=409)
    if isinstance(exc, sa_exc.DataError):
        return JSONResponse({"detail": "a value is out of range or malformed"}, status_code=422)
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return await _database_unavailable(request, exc)
    log.exception("database error during %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""
    app.add_exception_handler(errors.RuntimeDomainError, _domain_error)
    app.add_exception_handler(sa_exc.DBAPIError, _database_refused)
    app.add_exception_handler(sa_exc.TimeoutError, _database_unavailable)
