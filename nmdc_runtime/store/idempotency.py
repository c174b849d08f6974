"""`Idempotency-Key` rows: which resource the first request with a key created, to give a repeat the same one.

How a request with a key runs, all inside the caller's one transaction (`services.transactions.run_once`):

1. `claim_key` inserts the (principal, key) row with `ON CONFLICT DO NOTHING`. A concurrent request with the
   same key blocks on the primary key until the first transaction ends, so two repeats never both create.
2. The row was ours: the caller creates, then `remember_resource` stores the id of what it created (same
   transaction as what it created). If the creation fails, the rollback removes the row too, and a retry with
   the key runs afresh.
3. The row existed: a repeat with the same endpoint and body gets the id of what the first request created; a
   different endpoint or body is a misuse of the key, refused with `IdempotencyKeyReused` (422).

Only what was created is remembered, not an answer: the API shapes the answer, and errors are not replayed,
so a client may fix the cause and retry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import InvalidInput
from nmdc_runtime.models import IdempotencyKey

MAX_KEY_LENGTH = 255


class IdempotencyKeyReused(InvalidInput):
    """This Idempotency-Key was already used for a different request; use a new key for a new request."""


def request_hash(endpoint: str, payload: Any) -> str:
    """A fingerprint of a request: its endpoint and its (JSON-ready) body, key order ignored."""
    canonical = json.dumps([endpoint, payload], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class IdempotentRequest:
    """A POST that honours `Idempotency-Key`: who sent it, the key (None: none was sent), and what it asks."""

    principal: str
    """`Principal.key` of the caller."""
    key: str | None
    endpoint: str
    """The action, with ids filled in (e.g. `"POST /jobs/job-1/executions"`)."""
    payload: Any
    """The validated body as JSON (`model_dump(mode="json")`)."""


def key_row(request: IdempotentRequest, resource_id: str) -> dict[str, Any]:
    """The row that remembers `resource_id` for a request with a key, as `key_<column>` statement parameters
    (for a statement that claims the key and writes what it created at once: `store.executions.record_as_seen`)."""
    return {
        "key_principal": request.principal,
        "key_key": request.key,
        "key_endpoint": request.endpoint,
        "key_request_hash": request_hash(request.endpoint, request.payload),
        "key_resource_id": resource_id,
    }


KEY_COLUMNS = ("principal", "key", "endpoint", "request_hash", "resource_id")
"""The columns `key_row` gives."""


def claim_key(session: Session, *, request: IdempotentRequest) -> str | None:
    """Claim the request's key: None when the row is this request's (create, then `remember_resource`); the id
    of what the first request created when it is a repeat. IdempotencyKeyReused for another request's key."""
    fingerprint = request_hash(request.endpoint, request.payload)
    claimed = session.execute(
        insert(IdempotencyKey)
        .values(
            principal=request.principal,
            key=request.key,
            endpoint=request.endpoint,
            request_hash=fingerprint,
        )
        .on_conflict_do_nothing(index_elements=[IdempotencyKey.principal, IdempotencyKey.key])
        .returning(IdempotencyKey.key)
    ).scalar_one_or_none()
    if claimed is not None:
        return None
    # A new statement: under READ COMMITTED it sees the row the conflicting transaction committed.
    row = session.execute(
        sa.select(IdempotencyKey).where(
            IdempotencyKey.principal == request.principal, IdempotencyKey.key == request.key
        )
    ).scalar_one()
    if row.endpoint != request.endpoint or row.request_hash != fingerprint:
        raise IdempotencyKeyReused(field="Idempotency-Key", location="header")
    return row.resource_id


def remember_resource(session: Session, *, request: IdempotentRequest, resource_id: str) -> None:
    """Store the id of what the request whose key `claim_key` claimed created."""
    session.execute(
        sa.update(IdempotencyKey)
        .where(IdempotencyKey.principal == request.principal, IdempotencyKey.key == request.key)
        .values(resource_id=resource_id)
    )


def delete_keys_before(session: Session, *, before: datetime) -> int:
    """Forget keys stored before `before` (repeats after that run afresh); the number deleted."""
    result = session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.created_at < before))
    return result.rowcount
