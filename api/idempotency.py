"""The `Idempotency-Key` header, and the answer of an idempotent POST (the key rows are in
store/idempotency.py, the once-only run in services/transactions.py).

A route reads the header, hands the service an `idempotent_request(...)`, and answers with `respond(...)`: 201
and what was created, also for a repeat, which says so in `Idempotent-Replayed: true`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Response
from pydantic import BaseModel

from api.presenters import json_response
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.store.idempotency import MAX_KEY_LENGTH, IdempotentRequest

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeats with the same key (same caller, same body) get what the first one created, "
        "and create nothing.",
    ),
]
"""The optional `Idempotency-Key` request header: 1-255 printable ASCII characters."""

REPLAYED_HEADER = "Idempotent-Replayed"


def idempotent_request(
    principal: Principal, key: str | None, endpoint: str, body: BaseModel
) -> IdempotentRequest:
    """The request as `store.idempotency` fingerprints it: caller, key, endpoint and body."""
    return IdempotentRequest(
        principal=principal.key, key=key, endpoint=endpoint, payload=body.model_dump(mode="json")
    )


def respond(created: BaseModel, *, replayed: bool) -> Response:
    """201 and what the request (or, for a repeat, the first request with its key) created; a repeat says so
    in the `Idempotent-Replayed` header."""
    response = json_response(created, status_code=201)
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response
