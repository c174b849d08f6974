"""`Idempotency-Key` support for POST endpoints: the first response to a key is stored and replayed.

How a request with a key runs, all inside the caller's one transaction:

1. `INSERT ... ON CONFLICT DO NOTHING` claims the (principal, key) row. A concurrent request with the same key
   blocks on the primary key until the first transaction ends, so two repeats never both create.
2. The row was ours: run `create`, then store its response in the row (same transaction as what it created).
   If `create` fails, the rollback removes the row too, and a retry with the key runs afresh.
3. The row existed: a repeat with the same endpoint and body gets the stored status and body back; a different
   endpoint or body is a misuse of the key, refused with `IdempotencyKeyReused` (422).

Only successful answers are stored: errors are not replayed, so a client may fix the cause and retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import InvalidInput
from nmdc_runtime.models import IdempotencyKey

MAX_KEY_LENGTH = 255
_PENDING = 0
"""Status stored while the first request runs; only its own transaction can ever see it."""


class IdempotencyKeyReused(InvalidInput):
    """This Idempotency-Key was already used for a different request; use a new key for a new request."""


@dataclass(frozen=True)
class Outcome:
    """The answer to send: the first response to a key, or a fresh one."""

    status_code: int
    body: Any
    """JSON-ready (what `model_dump(mode="json")` gives)."""
    replayed: bool = False
    """True when this is the stored answer to an earlier request with the same key."""


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


def key_row(request: IdempotentRequest, answer: Outcome) -> dict[str, Any]:
    """The row that stores `answer` to a request with a key, as `key_<column>` statement parameters (for a
    statement that claims the key and writes what it created at once: `store.executions.record_as_seen`)."""
    return {
        "key_principal": request.principal,
        "key_key": request.key,
        "key_endpoint": request.endpoint,
        "key_request_hash": request_hash(request.endpoint, request.payload),
        "key_status_code": answer.status_code,
        "key_response": json.dumps(answer.body),
    }


def run_once(
    session: Session, *, request: IdempotentRequest, status_code: int, create: Callable[[], Any]
) -> Outcome:
    """Run `create` (which returns the JSON-ready response body) at most once per (principal, key).

    Without a key, `create` simply runs. The caller commits: the stored answer and what `create` wrote
    become visible together.
    """
    principal, key, endpoint, payload = request.principal, request.key, request.endpoint, request.payload
    if key is None:
        return Outcome(status_code=status_code, body=create())
    fingerprint = request_hash(endpoint, payload)
    claimed = session.execute(
        insert(IdempotencyKey)
        .values(
            principal=principal,
            key=key,
            endpoint=endpoint,
            request_hash=fingerprint,
            status_code=_PENDING,
            response={},
        )
        .on_conflict_do_nothing(index_elements=[IdempotencyKey.principal, IdempotencyKey.key])
        .returning(IdempotencyKey.key)
    ).scalar_one_or_none()
    if claimed is None:
        return _replay(session, principal=principal, key=key, endpoint=endpoint, fingerprint=fingerprint)
    body = create()
    session.execute(
        sa.update(IdempotencyKey)
        .where(IdempotencyKey.principal == principal, IdempotencyKey.key == key)
        .values(status_code=status_code, response=body)
    )
    return Outcome(status_code=status_code, body=body)


def _replay(session: Session, *, principal: str, key: str, endpoint: str, fingerprint: str) -> Outcome:
    # A new statement: under READ COMMITTED it sees the row the conflicting transaction committed.
    row = session.execute(
        sa.select(IdempotencyKey).where(IdempotencyKey.principal == principal, IdempotencyKey.key == key)
    ).scalar_one()
    if row.endpoint != endpoint or row.request_hash != fingerprint:
        raise IdempotencyKeyReused(field="Idempotency-Key", location="header")
    return Outcome(status_code=row.status_code, body=row.response, replayed=True)


def delete_keys_before(session: Session, *, before: datetime) -> int:
    """Forget keys stored before `before` (repeats after that run afresh); the number deleted."""
    result = session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.created_at < before))
    return result.rowcount
