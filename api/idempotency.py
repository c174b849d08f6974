"""The `Idempotency-Key` header and the answer of an idempotent POST (the SQL is in store/idempotency.py).

A route uses both::

    @router.post("/things", status_code=201, response_model=ThingRead)
    def create_thing(body: ThingCreate, session: SessionDep, principal: SitePrincipal,
                     idempotency_key: IdempotencyKeyHeader) -> JSONResponse:
        outcome = idempotency.run_once(session, principal=principal.key, key=idempotency_key,
                                       endpoint="POST /things", payload=body.model_dump(mode="json"),
                                       status_code=201, create=lambda: ...model_dump(mode="json"))
        return respond(outcome)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header
from fastapi.responses import JSONResponse

from nmdc_runtime.store.idempotency import MAX_KEY_LENGTH, Outcome

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


def respond(outcome: Outcome) -> JSONResponse:
    """The HTTP answer for an outcome; a replayed one says so in the `Idempotent-Replayed` header."""
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else None
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)
