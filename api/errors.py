"""Domain errors and database failures mapped to HTTP answers, in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc

from nmdc_runtime.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RuntimeDomainError,
    SiteDrained,
)
from nmdc_runtime.schemas.common import MAX_JSON_DEPTH

log = logging.getLogger("nmdc_runtime.api")

STATUS_BY_ERROR: list[tuple[type[RuntimeDomainError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
]


ERROR_CODE_HEADER = "NMDC-Error-Code"
ERROR_CODES: list[tuple[type[RuntimeDomainError], str]] = [(SiteDrained, "SITE_DRAINED")]
"""Domain errors a client may act on, named in the header `NMDC-Error-Code` of their answer (a client tells a
drained site's 409 from another site's claim without reading the message)."""


def status_of(exc: RuntimeDomainError) -> int:
    """The HTTP status for a domain error (the first matching class wins)."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400


def invalid_input(loc: list[str | int], message: str, kind: str = "value_error") -> JSONResponse:
    """A 422 in the same shape as FastAPI's own (`detail` lists `{loc, msg, type}`), so clients read one
    format, whether a route, a rule or a middleware refused the input."""
    return JSONResponse({"detail": [{"loc": loc, "msg": message, "type": kind}]}, status_code=422)


async def _domain_error(_request: Request, exc: RuntimeDomainError) -> JSONResponse:
    if isinstance(exc, InvalidInput) and "field" in exc.details:
        return invalid_input([exc.details.get("location", "query"), exc.details["field"]], exc.message)
    codes = [code for cls, code in ERROR_CODES if isinstance(exc, cls)]
    headers = {ERROR_CODE_HEADER: codes[0]} if codes else None
    return JSONResponse({"detail": exc.message}, status_code=status_of(exc), headers=headers)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"})


async def _database_refused(request: Request, exc: sa_exc.DBAPIError) -> JSONResponse:
    # Values that passed validation but not the database (e.g. a number out of range): the caller's input.
    if isinstance(exc, sa_exc.IntegrityError):
        log.warning("integrity error during %s %s: %s", request.method, request.url.path, exc.orig)
        return JSONResponse({"detail": "conflicts with the current state"}, status_code=409)
    if isinstance(exc, sa_exc.DataError):
        # PostgreSQL's own first line says which value (an unsupported \u0000 in JSON, a number out of range).
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return JSONResponse({"detail": f"a value cannot be stored: {reason}"}, status_code=422)
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return await _database_unavailable(request, exc)
    log.exception("database error during %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


UNSTORABLE_TEXT = "text may not contain NUL characters (\\u0000) or unpaired surrogates"


async def _unstorable_text(request: Request, exc: ValueError) -> JSONResponse:
    """Strings PostgreSQL cannot store, wherever they came from (path, query, form or body): 422, not 500."""
    if isinstance(exc, UnicodeEncodeError) or "NUL (0x00)" in str(exc):
        return JSONResponse({"detail": UNSTORABLE_TEXT}, status_code=422)
    log.error("unhandled error during %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


SECRET_FIELDS = frozenset({"password", "client_secret"})
MAX_ECHO = 200


def _echo(value: Any) -> Any:
    """The part of a refused input worth sending back: short values whole, long ones clipped."""
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "…"
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = repr(value)
    return value if len(text) <= MAX_ECHO else f"<{type(value).__name__} of {len(text)} characters>"


async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 shape, without echoing secrets or megabytes of the caller's own input back."""
    refused = []
    for error in exc.errors():
        error = dict(error)
        if SECRET_FIELDS.intersection(map(str, error.get("loc", ()))):
            error.pop("input", None)
        elif "input" in error:
            error["input"] = _echo(error["input"])
        refused.append(error)
    return JSONResponse({"detail": jsonable_encoder(refused)}, status_code=422)


class ErrorBody(BaseModel):
    """Every error answer: `detail` is a message, or for 422 a list of `{loc, msg, type}` naming the fields."""

    detail: str | list[dict[str, Any]]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, malformed, forged or expired bearer token"},
    403: {"model": ErrorBody, "description": "Authenticated, but not allowed"},
    404: {"model": ErrorBody, "description": "Unknown id"},
    409: {"model": ErrorBody, "description": "Conflicts with the current state"},
    413: {"model": ErrorBody, "description": "Request body larger than NMDC_MAX_BODY_BYTES"},
    422: {
        "model": ErrorBody,
        "description": "Invalid input; `detail` names the field. A JSON body must be UTF-8 and may nest at most "
        f"{MAX_JSON_DEPTH} levels deep.",
    },
    503: {"model": ErrorBody, "description": "Database unavailable"},
}
"""Error answers every route may give, for the OpenAPI page."""


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(ValueError, _unstorable_text)
    app.add_exception_handler(RuntimeDomainError, _domain_error)
    app.add_exception_handler(sa_exc.DBAPIError, _database_refused)
    app.add_exception_handler(sa_exc.TimeoutError, _database_unavailable)
