"""Access grants: short-lived tokens, signed with the runtime's asymmetric keys, that let one caller read one
data resource from the data site serving it. Data sites check them offline against the public keys the API
publishes (`GET /.well-known/jwks.json`); only the API holds the private keys.

The keys are a JSON Web Key Set of Ed25519 (`"kty": "OKP"`) or P-256 (`"kty": "EC"`) private keys, each with
a `kid`: `NMDC_GRANT_KEYS`, or, unset, one key generated once into `NMDC_HOME/grant_keys.json`. The first key
signs; every key is published, so a new key can be published before it signs and an old one kept until the
grants it signed have expired.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from nmdc_runtime.domain.principals import Principal

KEY_FILE = "grant_keys.json"
"""Under NMDC_HOME: the key set generated when NMDC_GRANT_KEYS is unset (a valid value for that setting)."""

# (kty, crv) -> the JWS algorithm, and how PyJWT writes such a key as a JWK.
_KINDS = {("OKP", "Ed25519"): ("EdDSA", OKPAlgorithm), ("EC", "P-256"): ("ES256", ECAlgorithm)}


class GrantKeyError(ValueError):
    """The grant keys cannot be used (malformed, public only, another kind of key, a `kid` missing or twice)."""


@dataclass(frozen=True)
class GrantKey:
    """One signing key: its `kid`, its algorithm and its private part."""

    kid: str
    algorithm: str
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK, built from the public key alone so that no private part can slip in."""
        writer = OKPAlgorithm if self.algorithm == "EdDSA" else ECAlgorithm
        jwk = writer.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


class GrantKeys:
    """The runtime's grant keys: the first signs, all are published."""

    def __init__(self, keys: list[GrantKey]) -> None:
        if not keys:
            raise GrantKeyError("the grant key set holds no key")
        kids = [key.kid for key in keys]
        if len(set(kids)) != len(kids):
            raise GrantKeyError(f"a kid is used twice in the grant keys: {kids}")
        self.keys = keys
        self._jwks = {"keys": [key.public_jwk() for key in keys]}

    @classmethod
    def from_jwks(cls, text: str) -> GrantKeys:
        """Keys from a JWK Set `{"keys": [...]}` of private Ed25519 or P-256 keys with a `kid` each."""
        try:
            entries = json.loads(text)["keys"]
            if not isinstance(entries, list):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            raise GrantKeyError('the grant keys must be a JSON Web Key Set: {"keys": [...]}') from None
        return cls([_private_key(entry, number) for number, entry in enumerate(entries, 1)])

    @property
    def signing(self) -> GrantKey:
        return self.keys[0]

    def jwks(self) -> dict[str, Any]:
        """The public keys, as `GET /.well-known/jwks.json` publishes them."""
        return self._jwks

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWT of `claims`, signed by the signing key and naming its `kid`."""
        key = self.signing
        return jwt.encode(claims, key.private, algorithm=key.algorithm, headers={"kid": key.kid})


def _private_key(entry: Any, number: int) -> GrantKey:
    if not isinstance(entry, dict):
        raise GrantKeyError(f"grant key {number} is not a JSON object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise GrantKeyError(f"grant key {number} has no kid")
    kind = _KINDS.get((entry.get("kty"), entry.get("crv")))
    if kind is None:
        raise GrantKeyError(f"grant key {kid!r} is neither an Ed25519 (OKP) nor a P-256 (EC) key")
    algorithm, reader = kind
    if "alg" in entry and entry["alg"] != algorithm:
        raise GrantKeyError(f"grant key {kid!r} says alg {entry['alg']!r}; its kind signs with {algorithm}")
    try:
        key = reader.from_jwk(entry)
    except (jwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise GrantKeyError(f"grant key {kid!r} cannot be read ({type(exc).__name__})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise GrantKeyError(f"grant key {kid!r} has no private part (`d`): the API signs with it")
    return GrantKey(kid=kid, algorithm=algorithm, private=key)


def new_key_set() -> str:
    """A JWK Set of one new Ed25519 private key with a random `kid`, as NMDC_GRANT_KEYS takes it."""
    jwk = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate(), as_dict=True)
    return json.dumps({"keys": [{**jwk, "kid": secrets.token_hex(8), "alg": "EdDSA", "use": "sig"}]})


def load_grant_keys(configured: str | None, home: Path) -> GrantKeys:
    """The configured keys (NMDC_GRANT_KEYS), else those kept in `home`, generated there on first use."""
    if configured is not None:
        return GrantKeys.from_jwks(configured)
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name (mkstemp: mode 0600), then linked into place: a link never
        # replaces a file, so when processes race on first start one key set wins and nobody reads half of one.
        fd, tmp = tempfile.mkstemp(dir=home, prefix=".grant_keys.")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(new_key_set())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    try:
        return GrantKeys.from_jwks(path.read_text())
    except GrantKeyError as exc:
        raise GrantKeyError(f"{path}: {exc}; delete it or set NMDC_GRANT_KEYS") from None


def issue_grant(
    keys: GrantKeys,
    *,
    issuer: str,
    data_resource_id: str,
    url: str,
    owner_site_id: str,
    requester: Principal,
    expires_at: datetime,
    now: datetime,
) -> tuple[str, datetime]:
    """A grant to read one data resource from the site that owns it, and the moment it expires (whole
    seconds, never later than `expires_at`).

    Its audience is the owning site, so no other data site accepts it.
    """
    expiry = int(expires_at.timestamp())
    claims = {
        "iss": issuer,
        "aud": owner_site_id,
        "sub": requester.key,
        "data_resource_id": data_resource_id,
        "url": url,
        "owner_site_id": owner_site_id,
        "requesting_site_id": requester.site_id,
        "iat": int(now.timestamp()),
        "exp": expiry,
        "jti": uuid.uuid4().hex,
    }
    return keys.sign(claims), datetime.fromtimestamp(expiry, UTC)
