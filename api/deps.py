"""Request dependencies, declared once as `Annotated` aliases: settings, a database session, the caller."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlowPassword, OAuthFlows
from fastapi.routing import APIRoute
from fastapi.security import OAuth2
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session

from api.middleware import REQUEST_SESSIONS
from api.revocations import Revocations
from api.waiting import Waiters
from nmdc_runtime.auth import InvalidToken
from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.grants import GrantKeys
from nmdc_runtime.schemas.common import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from nmdc_runtime.store import pages as pages_store
from nmdc_runtime.store.pages import PageParams, ScopedPage


class _BearerToken(OAuth2):
    """The bearer token of a request, from either grant of `POST /token` (both shown on the /docs page)."""

    def __init__(self) -> None:
        super().__init__(
            flows=OAuthFlows(
                password=OAuthFlowPassword(tokenUrl="token"),
                clientCredentials=OAuthFlowClientCredentials(tokenUrl="token"),
            ),
            scheme_name="OAuth2",
            auto_error=False,
        )

    async def __call__(self, request: Request) -> str | None:
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        return token if scheme.lower() == "bearer" and token else None


_bearer = _BearerToken()


# The dependencies are `async def` where they do no I/O: FastAPI runs a plain `def` dependency in its thread
# pool, a hop between threads for every request and every such dependency (bench/README.md).


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _database(request: Request) -> Database:
    return request.app.state.database


async def _policy(request: Request) -> Policy:
    return request.app.state.policy


async def _session(request: Request) -> Session:
    """A session for the request: the services it is passed to commit their own changes; what is left (reads)
    ends when `RequestSessions` closes it, after the answer.

    A plain function rather than a `yield` dependency: FastAPI runs a generator dependency through an exit
    stack of its own, which cost a claim a tenth of its time (bench/README.md)."""
    return _lent(request, request.app.state.database.sessionmaker())


async def _read_session(request: Request) -> Session:
    """A session for a request that only reads (`Database.read_sessionmaker`): no BEGIN or ROLLBACK around its
    statements, and nothing to roll back when `RequestSessions` closes it. It refuses to write."""
    return _lent(request, request.app.state.database.read_sessionmaker())


def _lent(request: Request, session: Session) -> Session:
    """`session`, noted for `RequestSessions` to close after the answer."""
    request.scope.setdefault(REQUEST_SESSIONS, []).append(session)
    return session


async def _revocations(request: Request) -> Revocations:
    return request.app.state.revocations


async def _grant_keys(request: Request) -> GrantKeys:
    return request.app.state.grant_keys


async def _waiters(request: Request) -> Waiters:
    return request.app.state.waiters


SettingsDep = Annotated[Settings, Depends(_settings)]
RevocationsDep = Annotated[Revocations, Depends(_revocations)]
"""The refused tokens of this process: a change of credentials applies it at once."""
PolicyDep = Annotated[Policy, Depends(_policy)]
"""The numbers the rules run on, for the services."""
DatabaseDep = Annotated[Database, Depends(_database)]
SessionDep = Annotated[Session, Depends(_session)]
ReadSessionDep = Annotated[Session, Depends(_read_session)]
"""For the routes that only read (every GET)."""
GrantKeysDep = Annotated[GrantKeys, Depends(_grant_keys)]
"""The keys that sign access grants (the first signs, all are published)."""
WaitersDep = Annotated[Waiters, Depends(_waiters)]
"""The requests of this process that wait, and what wakes them (`api/waiting.py`)."""


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"})


async def _principal(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> Principal:
    # async: checking a JWT needs no I/O, and a sync dependency would cost a thread-pool hop per request.
    if not token:
        raise _unauthorized("not authenticated: send Authorization: Bearer <token> (from POST /token)")
    try:
        principal = request.app.state.verified_tokens.read(
            token, key=request.app.state.jwt_key, issuer=request.app.state.settings.token_issuer
        )
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from exc
    if request.app.state.revocations.refuses(principal):
        raise _unauthorized("the credentials of this token were revoked, or its site or user is disabled")
    return principal


# The roles read the token themselves rather than through `_principal`: every level of dependencies costs a
# request its resolution by FastAPI (bench/README.md).


async def _admin(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> Principal:
    principal = await _principal(request, token)
    if not principal.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this action needs a runtime admin")
    return principal


async def _site(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> Principal:
    principal = await _principal(request, token)
    if not principal.is_site:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this action needs a site client token")
    return principal


async def _metrics_reader(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> None:
    # Prometheus holds a static scrape token, not a site's or a person's credentials.
    scrape = request.app.state.settings.metrics_token
    if token and scrape is not None and hmac.compare_digest(token, scrape.get_secret_value()):
        return
    principal = await _principal(request, token)
    if not principal.admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="metrics need a runtime admin or the scrape token"
        )


CurrentPrincipal = Annotated[Principal, Depends(_principal)]
"""Any authenticated caller."""
AdminPrincipal = Annotated[Principal, Depends(_admin)]
"""A runtime admin (staff user)."""
SitePrincipal = Annotated[Principal, Depends(_site)]
"""A site client; `principal.site_id` is the site it acts for."""
MetricsReader = Annotated[None, Depends(_metrics_reader)]
"""A runtime admin, or Prometheus with the scrape token `NMDC_METRICS_TOKEN`."""


def _known_query_params(route: APIRoute) -> frozenset[str]:
    """The query parameters a route declares, its dependencies' included (worked out once per route)."""
    known = getattr(route, "_nmdc_query_params", None)
    if known is None:
        names: set[str] = set()
        dependants = [route.dependant]
        while dependants:
            dependant = dependants.pop()
            names.update(param.alias for param in dependant.query_params)
            dependants.extend(dependant.dependencies)
        known = route._nmdc_query_params = frozenset(names)
    return known


async def _page(
    request: Request,
    max_page_size: Annotated[
        int, Query(ge=1, description=f"Page length; larger than {MAX_PAGE_SIZE} is clamped.")
    ] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[str | None, Query(max_length=512, description="From the previous page.")] = None,
) -> PageParams:
    """The page asked for, bound to this list: its path and filters are fingerprinted here, once, so a token
    from another list (or the same list with other filters) is a 422 and no route has to know about it. Its
    items weigh at most `NMDC_MAX_PAGE_BYTES` together (at least one item).

    A query parameter the list does not know is a 422 naming it: ignored, a mistyped filter would silently
    answer with the whole list.
    """
    unknown = sorted(set(request.query_params) - _known_query_params(request.scope["route"]))
    if unknown:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": "unknown query parameter for this list",
                    "type": "extra_forbidden",
                    "input": request.query_params[name],
                }
                for name in unknown
            ]
        )
    scope = pages_store.page_scope(request.url.path, request.query_params.multi_items())
    after = pages_store.decode_page_token(page_token, scope) if page_token else None
    return ScopedPage(
        size=min(max_page_size, MAX_PAGE_SIZE),
        after=after,
        max_bytes=request.app.state.settings.max_page_bytes,
        scope=scope,
    )


PageDep = Annotated[PageParams, Depends(_page)]
