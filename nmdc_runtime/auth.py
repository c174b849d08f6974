"""Secrets, passwords and access tokens. Secrets are kept only as slow salted hashes (argon2id)."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict

import jwt
from argon2 import Parameters, PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from nmdc_runtime.domain.principals import Principal

# argon2-cffi's default parameters: the RFC 9106 low-memory profile (about 0.2 s a hash on 2 cores).
_hasher = PasswordHasher()
_dummy_hash: str | None = None


def use_hash_parameters(parameters: Parameters) -> None:
    """Hash new secrets with other argon2 parameters (the tests use argon2's cheapest profile).

    Verifying always uses the parameters stored in each hash, so existing hashes keep working.
    """
    global _hasher, _dummy_hash
    _hasher = PasswordHasher.from_parameters(parameters)
    _dummy_hash = None


def _dummy() -> str:
    # A hash of a random secret: verifying against it for unknown names costs the same as for known ones.
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


def hash_secret(secret: str) -> str:
    """An argon2id hash of a password or client secret."""
    return _hasher.hash(secret)


def verify_secret(secret_hash: str | None, secret: str) -> bool:
    """Whether `secret` matches `secret_hash`; None (unknown account) costs as much and never matches."""
    try:
        return _hasher.verify(secret_hash or _dummy(), secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_client_id() -> str:
    """A new, unguessable site client id."""
    return "sc-" + secrets.token_hex(12)


def new_client_secret() -> str:
    """A new site client secret (shown once, stored only as a hash)."""
    return secrets.token_urlsafe(32)


# --- access tokens -------------------------------------------------------------------------------------

TOKEN_ALGORITHM = "HS256"
DEFAULT_ISSUER = "nmdc-runtime"
AUDIENCE = "nmdc-runtime-api"
"""Every access token names this API as its audience, so a token minted for another service is refused."""


class InvalidToken(Exception):
    """The bearer token is missing, malformed, forged or expired."""


def issue_token(principal: Principal, *, key: str, expires_in: int, issuer: str = DEFAULT_ISSUER) -> str:
    """A signed JWT naming the principal and its roles, valid for `expires_in` seconds.

    Roles travel in the token so that checking a request costs no database round trip; a change of
    roles therefore takes effect when the caller next fetches a token. Revocation and disabling do not wait
    for that: the API refuses those tokens from a cached list (`api/revocations.py`).
    """
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": principal.key,
        "kind": principal.kind,
        "name": principal.name,
        "admin": principal.admin,
        "site_id": principal.site_id,
        "site_admin_of": sorted(principal.site_admin_of),
        "iat": now,
        "exp": now + expires_in,
    }
    return jwt.encode(claims, key, algorithm=TOKEN_ALGORITHM)


def read_token(token: str, *, key: str, issuer: str = DEFAULT_ISSUER) -> Principal:
    """The principal a token was issued to; InvalidToken when it is not one of ours (signature, issuer,
    audience) or has expired."""
    return _read_token(token, key=key, issuer=issuer)[0]


def _read_token(token: str, *, key: str, issuer: str) -> tuple[Principal, float]:
    """`read_token`, and the token's `exp` (epoch seconds)."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[TOKEN_ALGORITHM],
            issuer=issuer,
            audience=AUDIENCE,
            options={"require": ["exp", "iat", "sub", "kind", "name", "iss", "aud"]},
        )
        kind = claims["kind"]
        if kind not in ("user", "site_client") or (kind == "site_client" and not claims.get("site_id")):
            raise InvalidToken("token names no valid principal")
        principal = Principal(
            kind=kind,
            name=str(claims["name"]),
            admin=bool(claims.get("admin", False)),
            site_id=claims.get("site_id"),
            site_admin_of=frozenset(claims.get("site_admin_of") or ()),
        )
        return principal, float(claims["exp"])
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token has expired") from exc
    except (jwt.InvalidTokenError, TypeError, ValueError) as exc:
        raise InvalidToken("token is not valid") from exc


class VerifiedTokens:
    """Tokens this process has already verified, with their principal, until they expire: a site sends the
    same token with every request for an hour, and checking its signature and claims again each time was
    an eighth of the CPU a claim costs (bench/README.md). Bounded: the least recently used go first.

    Only the token's own checks are remembered; revocation is checked on every request all the same
    (`api/revocations.py`). Not thread-safe: the API uses it from its event loop only.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, str], tuple[Principal, float]] = OrderedDict()

    def read(self, token: str, *, key: str, issuer: str = DEFAULT_ISSUER) -> Principal:
        """`read_token`, from memory when this token was verified before with the same key and issuer."""
        entry_key = (token, key, issuer)
        entry = self._entries.get(entry_key)
        if entry is not None:
            # As PyJWT decides: valid while `exp` is still ahead.
            if time.time() < entry[1]:
                self._entries.move_to_end(entry_key)
                return entry[0]
            del self._entries[entry_key]
        principal, expires = _read_token(token, key=key, issuer=issuer)
        self._entries[entry_key] = (principal, expires)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return principal
