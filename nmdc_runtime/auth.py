"""Secrets and passwords: slow salted hashes (argon2), never stored in the clear."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

# A hash of a random secret: verifying against it for unknown names costs the same as for known ones.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_secret(secret: str) -> str:
    """An argon2id hash of a password or client secret."""
    return _hasher.hash(secret)


def verify_secret(secret_hash: str | None, secret: str) -> bool:
    """Whether `secret` matches `secret_hash`; None (unknown account) costs as much and never matches."""
    try:
        return _hasher.verify(secret_hash or _DUMMY_HASH, secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_client_id() -> str:
    """A new, unguessable site client id."""
    return "sc-" + secrets.token_hex(12)


def new_client_secret() -> str:
    """A new site client secret (shown once, stored only as a hash)."""
    return secrets.token_urlsafe(32)
