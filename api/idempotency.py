"""The `Idempotency-Key` header and the answer of an idempotent POST (the SQL is in store/idempotency.py).

A route reads the header, hands the service an `idempotent_request(...)`, and answers with `respond(outcome)`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.store.idempotency import MAX_KEY_LENGTH, IdempotentRequest, Outcome

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeats with the same key (same caller, same body) get the first answer and create nothing.",
    ),
]
"""The optional `Idempotency-Key` request header: 1-255 printable ASCII characters."""

REPLAYED_HEADER = "Idempotent-Replayed"


def idempotent_request(
    principal: Principal, key: str | None, endpoint: str, body: BaseModel
) -> IdempotentRequest:
    """The request as `store.idempotency.run_once` fingerprints it: caller, key, endpoint and body."""
    return IdempotentRequest(
        principal=principal.key, key=key, endpoint=endpoint, payload=body.model_dump(mode="json")
    )


def respond(outcome: Outcome) -> JSONResponse:
    """The HTTP answer for an outcome; a replayed one says so in the `Idempotent-Replayed` header."""
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else None
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)
