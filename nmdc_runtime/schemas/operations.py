"""Operations as the API takes and shows them: the promise a claim returns.

`Operation` is generic over its result and metadata types, as long-running operations are, so the OpenAPI
page shows the concrete shape: `Operation[ExecutionRead, OperationMetadata]`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from nmdc_runtime.domain.states import OperationState
from nmdc_runtime.schemas.common import JsonObject, StrictBool, StrictModel, Text
from nmdc_runtime.schemas.data import OpaqueId
from nmdc_runtime.schemas.executions import ExecutionRead

ResultT = TypeVar("ResultT")
MetadataT = TypeVar("MetadataT")

ErrorCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")]
"""An error code in google.rpc.Code style: `CANCELLED`, `DEADLINE_EXCEEDED`, `INTERNAL`, ..."""


class Status(BaseModel):
    """Why an operation failed: a code, a message for people, and details for programs."""

    code: str
    message: str = ""
    details: Any = None


class StatusInput(StrictModel):
    """The error a site finishes an operation with. Code `CANCELLED` ends it `canceled`, others `failed`."""

    code: ErrorCode
    message: Text = ""
    details: dict[str, Any] | list[Any] | None = None


class OperationMetadata(BaseModel):
    """Progress information. The first keys are the server's; a site may add any others by PATCH."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    site_id: str
    workflow_id: str
    attempt: int
    state: OperationState
    lease_expire_time: datetime
    lease_seconds: int = Field(description="Each heartbeat by the holder renews the lease by this much.")
    progress: float | None = Field(None, ge=0, le=100, description="Percent done, as the site reports it.")
    message: str | None = None
    cancel_requested: bool
    paused: bool


class Operation(BaseModel, Generic[ResultT, MetadataT]):
    """A long-running operation: once `done`, exactly one of `result` and `error` is set, for good."""

    list_columns: ClassVar = (
        "id",
        "metadata.job_id",
        "metadata.workflow_id",
        "metadata.site_id",
        "metadata.state",
        "metadata.attempt",
        "metadata.lease_expire_time",
        "error.code",
        "error.message",
    )
    """What `nmdc-runtime operations list` prints of each (as `ReadModel.list_columns`)."""

    id: str
    done: bool
    result: ResultT | None = None
    error: Status | None = None
    metadata: MetadataT
    create_time: datetime
    update_time: datetime
    expire_time: datetime | None = Field(
        None, description="Set once done: after this time the operation may be deleted."
    )


OperationRead = Operation[ExecutionRead, OperationMetadata]
"""The operation a claim returns."""


class ResultRef(StrictModel):
    """Names the execution an operation resolves to."""

    execution_id: OpaqueId


class OperationUpdate(StrictModel):
    """`PATCH /operations/{op_id}`: merge metadata (a heartbeat renews the lease), or finish the operation."""

    metadata: JsonObject | None = None
    done: StrictBool | None = None
    result: ResultRef | None = None
    error: StatusInput | None = None

    @field_validator("error")
    @classmethod
    def _one_outcome(cls, value: StatusInput | None, info: ValidationInfo) -> StatusInput | None:
        if value is not None and info.data.get("result") is not None:
            raise ValueError("send either result or error, not both")
        return value
