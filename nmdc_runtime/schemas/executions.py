"""Executions as the API takes and shows them: what an executing site did for a job."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from nmdc_runtime.domain.states import ExecutionStatus
from nmdc_runtime.schemas.common import JsonObject, ReadModel, StrictModel, UtcDatetime
from nmdc_runtime.schemas.data import DataResourceCreate, DataResourceRead, OpaqueId

MAX_OUTPUTS = 1000


class ExecutionCreate(StrictModel):
    """`POST /jobs/{job_id}/executions`: each output becomes a data resource of the executing site."""

    operation_id: OpaqueId
    status: ExecutionStatus
    started_at: UtcDatetime
    ended_at: UtcDatetime
    outputs: list[DataResourceCreate] = Field(default_factory=list, max_length=MAX_OUTPUTS)
    details: JsonObject = Field(default_factory=dict)

    @field_validator("ended_at")
    @classmethod
    def _ends_after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        started = info.data.get("started_at")
        if started is not None and value < started:
            raise ValueError("ended_at is before started_at")
        return value


class ExecutionUpdate(StrictModel):
    """`PATCH /jobs/{job_id}/executions/{exec_id}`: the fields sent change; `details` is merged (null removes)."""

    status: ExecutionStatus | None = None
    ended_at: UtcDatetime | None = None
    details: JsonObject | None = None

    @field_validator("status", "ended_at")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null; leave the field out to keep it")
        return value


class ExecutionRead(ReadModel):
    """An execution; `outputs` are the data resources it registered."""

    id: str
    job_id: str
    site_id: str
    operation_id: str
    workflow_id: str
    status: ExecutionStatus
    started_at: datetime
    ended_at: datetime
    outputs: list[DataResourceRead]
    details: dict[str, Any]
    created_at: datetime
    updated_at: datetime
