"""`Idempotency-Key` rows: what the first request with a key created, as it was, to give a repeat the same.

How a request with a key runs, all inside the caller's one transaction (`services.transactions.run_once`):

1. `claim_key` inserts the (principal, key) row with `ON CONFLICT DO NOTHING`. A concurrent request with the
   same key blocks on the primary key until the first transaction ends, so two repeats never both create.
2. The row was ours: the caller creates, then `remember_created` stores what it created as rows' documents
   (`row_document`; same transaction as what it created). If the creation fails, the rollback removes the row
   too, and a retry with the key runs afresh.
3. The row existed: a repeat with the same endpoint and body gets those documents back, to make the rows again
   as they were (`row_from_document`); a different endpoint or body is a misuse of the key, refused with
   `IdempotencyKeyReused` (422).

Rows are remembered, not an answer: the API shapes the answer from them (the same way for a repeat), and errors
are not remembered, so a client may fix the cause and retry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

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


Row = TypeVar("Row")


def row_document(row: Any) -> dict[str, Any]:
    """A row's columns as a JSON document (times in ISO 8601), the shape `to_jsonb(row)` gives in SQL."""
    return {
        attr.columns[0].name: (value.isoformat() if isinstance(value, datetime) else value)
        for attr in row.__mapper__.column_attrs
        for value in (getattr(row, attr.key),)
    }


def row_from_document(model: type[Row], document: dict[str, Any]) -> Row:
    """The row `row_document` made a document of, as a new object outside any session."""
    values = {}
    for attr in model.__mapper__.column_attrs:
        value = document.get(attr.columns[0].name)
        if isinstance(value, str) and isinstance(attr.columns[0].type, sa.DateTime):
            value = datetime.fromisoformat(value)
        values[attr.key] = value
    return model(**values)


def key_row(request: IdempotentRequest, created: Any) -> dict[str, Any]:
    """The row that remembers what a request with a key `created` (a JSON document), as `key_<column>`
    statement parameters (for a statement that claims the key and writes what it created at once:
    `store.executions.record_as_seen`)."""
    return {
        "key_principal": request.principal,
        "key_key": request.key,
        "key_endpoint": request.endpoint,
        "key_request_hash": request_hash(request.endpoint, request.payload),
        "key_created": json.dumps(created),
    }


KEY_COLUMNS = ("principal", "key", "endpoint", "request_hash", "created")
"""The columns `key_row` gives."""


def claim_key(session: Session, *, request: IdempotentRequest) -> Any | None:
    """Claim the request's key: None when the row is this request's (create, then `remember_created`); what the
    first request created (its document) when it is a repeat. IdempotencyKeyReused for another request's key."""
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
    return row.created


def remember_created(session: Session, *, request: IdempotentRequest, created: Any) -> None:
    """Store what the request whose key `claim_key` claimed created (a JSON document)."""
    session.execute(
        sa.update(IdempotencyKey)
        .where(IdempotencyKey.principal == request.principal, IdempotencyKey.key == request.key)
        .values(created=created)
    )


def delete_keys_before(session: Session, *, before: datetime) -> int:
    """Forget keys stored before `before` (repeats after that run afresh); the number deleted."""
    result = session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.created_at < before))
    return result.rowcount
