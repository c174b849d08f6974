"""`POST /token`: OAuth2 client-credentials (sites) and password (users) grants."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, Request, status
from pydantic import BaseModel

from api.deps import DatabaseDep, SettingsDep
from api.errors import ErrorBody
from api.login_guard import LoginGuard, TooManyAttempts, client_address
from nmdc_runtime.auth import issue_token
from nmdc_runtime.db import Database
from nmdc_runtime.domain.errors import InvalidInput
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.services import accounts as accounts_service

router = APIRouter(tags=["auth"])


class Expires(BaseModel):
    seconds: int


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    expires: Expires
    """The same lifetime again, for existing NMDC Runtime clients."""


def _authenticate(database: Database, grant_type: str, name: str, secret: str) -> Principal | None:
    with database.sessionmaker() as session:
        if grant_type == "client_credentials":
            return accounts_service.authenticate_site_client(session, client_id=name, client_secret=secret)
        return accounts_service.authenticate_user(session, username=name, password=secret)


@router.post(
    "/token",
    response_model=Token,
    responses={
        401: {"description": "Bad credentials, a revoked client, or a disabled site or user"},
        429: {
            "model": ErrorBody,
            "description": "Too many failed attempts from this address (see Retry-After), or too many logins "
            "in progress",
        },
    },
)
async def token(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    grant_type: Annotated[Literal["client_credentials", "password"], Form()],
    client_id: Annotated[str | None, Form(max_length=256)] = None,
    client_secret: Annotated[str | None, Form(max_length=1024)] = None,
    username: Annotated[str | None, Form(max_length=256)] = None,
    password: Annotated[str | None, Form(max_length=1024)] = None,
) -> Token:
    """Exchange credentials for a bearer token."""
    name, secret = (client_id, client_secret) if grant_type == "client_credentials" else (username, password)
    if not name or not secret:
        needed = (
            ("client_id", "client_secret") if grant_type == "client_credentials" else ("username", "password")
        )
        # The documented 422 shape (a list naming the field), like every other 422.
        missing = needed[1] if name else needed[0]
        raise InvalidInput(
            f"grant_type={grant_type} needs {' and '.join(needed)}", field=missing, location="body"
        )
    guard: LoginGuard = request.app.state.login_guard
    address = client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        settings.trusted_proxies,
    )
    try:
        guard.check(name, address)
        # Hash checks are deliberately slow: off the event loop, in the guard's bounded pool.
        principal = await guard.run_check(lambda: _authenticate(database, grant_type, name, secret))
    except TooManyAttempts as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"{exc.reason}; retry after {exc.retry_after} s",
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
    if principal is None:
        guard.failed(name, address)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="invalid credentials", headers={"WWW-Authenticate": "Bearer"}
        )
    expires_in = settings.token_expire_seconds
    return Token(
        access_token=issue_token(
            principal, key=request.app.state.jwt_key, expires_in=expires_in, issuer=settings.token_issuer
        ),
        expires_in=expires_in,
        expires=Expires(seconds=expires_in),
    )
