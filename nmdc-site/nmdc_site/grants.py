"""Checking access grants at a data site, offline, against the public keys of the API it registers with.

The keys (`GET /.well-known/jwks.json`) are fetched once and kept. A grant naming a `kid` that is not among
them makes the site fetch them again, so a key the API has just started signing with is accepted, but at most
once every `refresh_seconds`: a stream of grants with made-up `kid`s costs the API one request now and then,
not one per request. The keys are also fetched again once they are older than `max_age_seconds`, so a key the
API stopped publishing stops being accepted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import jwt

log = logging.getLogger("nmdc_site.grants")

ALGORITHMS = ("EdDSA", "ES256")
"""What grants are signed with; anything else (`none`, HS256 with a public key as the secret) is refused."""
LEEWAY_SECONDS = 10
"""Clock difference between the API and the data site tolerated on `exp`."""
REQUIRED_CLAIMS = ["exp", "aud", "data_resource_id"]


class GrantRefused(Exception):
    """A request without a valid grant for this file: `status` is 401 (no grant, or not a valid one: forged,
    tampered, expired, an unknown key) or 403 (a valid grant, for another file or another data site)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


class PublicKeys:
    """The API's grant keys by `kid`, fetched by `fetch` (returning a JWK Set) and kept."""

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, Any]],
        *,
        refresh_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.refresh_seconds = refresh_seconds
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self.fetches = 0
        """How many times the keys were fetched (for logs and tests)."""

    def load(self) -> int:
        """Fetch the keys now; returns how many there are. Raises what `fetch` raises."""
        with self._lock:
            self._load()
            return len(self._keys)

    def _load(self) -> None:
        self._fetched_at = self._clock()
        self.fetches += 1
        jwks = self._fetch()
        keys = {}
        for entry in jwks.get("keys", []):
            kid = entry.get("kid") if isinstance(entry, dict) else None
            if not isinstance(kid, str):
                continue
            # The public fields only: a private part published by mistake is not needed to verify.
            public = {name: value for name, value in entry.items() if name not in ("d", "p", "q")}
            try:
                key = jwt.PyJWK(public)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                log.warning("ignoring grant key %r: not a key this site can use", kid)
                continue
            if key.algorithm_name in ALGORITHMS:
                keys[kid] = key
        self._keys = keys

    def _try_load(self) -> None:
        try:
            self._load()
        except Exception as exc:
            # Keep the keys we have: the API being down must not make valid grants fail.
            log.warning("could not fetch the grant keys: %s", exc)

    def get(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`, fetching the keys again when they are old or `kid` is new (see the module)."""
        with self._lock:
            now = self._clock()
            since = None if self._fetched_at is None else now - self._fetched_at
            if since is None or since >= self.max_age_seconds:
                self._try_load()
            elif kid not in self._keys and since >= self.refresh_seconds:
                log.info("grant signed with unknown key %r: fetching the keys again", kid[:64])
                self._try_load()
            return self._keys.get(kid)


class GrantVerifier:
    """Checks the grant of a request for one of this data site's files."""

    def __init__(self, keys: PublicKeys, site_id: str, leeway: float = LEEWAY_SECONDS) -> None:
        self.keys = keys
        self.site_id = site_id
        self.leeway = leeway

    def check(self, authorization: str | None, data_resource_ids: Collection[str]) -> dict[str, Any]:
        """The grant's claims when `authorization` (the request's header) carries a valid grant for one of
        `data_resource_ids` (the resources this site registered at the requested URL); else GrantRefused."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise GrantRefused(401, "an access grant is needed: POST /data_resources/{id}:access at the API")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise GrantRefused(401, "the grant is not a valid token") from None
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise GrantRefused(401, "the grant is signed with a key the API does not publish")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self.site_id,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise GrantRefused(401, "the grant has expired: ask the API for a new one") from None
        except jwt.InvalidAudienceError:
            raise GrantRefused(403, "the grant is for another data site") from None
        except jwt.InvalidTokenError:
            raise GrantRefused(401, "the grant is not valid") from None
        if claims["data_resource_id"] not in data_resource_ids:
            raise GrantRefused(403, "the grant is for another file")
        return claims
