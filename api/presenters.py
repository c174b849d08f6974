"""The API's answers: a read model (`nmdc_runtime/presenters.py` makes them from rows) serialized once."""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def json_response(model: BaseModel, *, status_code: int) -> Response:
    """A response model serialized once, as FastAPI would (by alias): returned as it is, FastAPI would
    validate it again against the route's `response_model` first (bench/README.md)."""
    return Response(
        model.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json"
    )
