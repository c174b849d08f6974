"""What the API returns, as the client sees it.

These models mirror the API's contract, not the server's own schemas, so the client can ship on
its own. Unknown fields are kept (``extra="allow"``): a newer server may add fields without breaking older
clients, and ``model_dump()`` hands them back unchanged. The server's tests check each model against the API's
OpenAPI document (`tests/unit/test_site_client_contract.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    """Base of every response model: tolerant of fields the contract does not name."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Token(ApiModel):
    """An access token from `POST /token`."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int


class Principal(ApiModel):
    """Who a token belongs to (`GET /users/me`)."""

    kind: Literal["user", "site_client"] | str
    username: str | None = None
    client_id: str | None = None
    site_id: str | None = None
    admin: bool = False


class Site(ApiModel):
    id: str
    name: str
    capabilities: list[str] = Field(default_factory=list)
    created_at: datetime | None = None


class Credentials(ApiModel):
    """A site client's credentials; the secret is shown only once."""

    client_id: str
    client_secret: str


class User(ApiModel):
    username: str
    admin: bool = False
    site_admin_of: list[str] = Field(default_factory=list)


class Checksum(ApiModel):
    type: Literal["sha256", "md5"] | str
    checksum: str


class DataResource(ApiModel):
    id: str
    site_id: str
    name: str
    url: str
    data_type: str
    size: int
    checksums: list[Checksum] = Field(default_factory=list)
    description: str | None = None
    requires_grant: bool = False
    """Its data site serves it only with an access grant (`NmdcClient.access`)."""
    group: str | None = None
    """The sample or data generation it belongs to (servers that know groups)."""
    created_at: datetime | None = None

    def checksum(self, kind: str) -> str | None:
        """The hex checksum of type `kind` (e.g. ``"sha256"``), if the resource has one."""
        for item in self.checksums:
            if item.type == kind:
                return item.checksum.lower()
        return None


class AccessUrl(ApiModel):
    """Where to read a data resource and the headers to send there (`POST /data_resources/{id}:access`)."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    expire_time: datetime | None = None


class Workflow(ApiModel):
    id: str
    name: str
    version: str
    data_types: list[str] = Field(default_factory=list)
    required_capabilities: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    lease_seconds: int | None = None
    """How long a claim of its jobs may last, when the workflow says (servers that know the field)."""
    inputs: dict[str, Any] | None = None
    """Its inputs by role (`{role: {"data_type", "optional"}}`), if it names them."""


class Job(ApiModel):
    id: str
    workflow_id: str
    config: dict[str, Any] = Field(default_factory=dict)
    status: str
    attempts: int = 0
    max_attempts: int | None = None
    created_at: datetime | None = None

    @property
    def data_resources(self) -> list[DataResource]:
        """The job's inputs, in full, as fixed when the job was made."""
        return [DataResource.model_validate(item) for item in self.config.get("data_resources", [])]

    @property
    def inputs(self) -> dict[str, DataResource]:
        """Those of its inputs that fill a role of its workflow, by role (none for jobs made without roles)."""
        return {
            role: DataResource.model_validate(item)
            for role, item in (self.config.get("inputs") or {}).items()
        }


class Execution(ApiModel):
    id: str
    job_id: str
    site_id: str
    operation_id: str
    status: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # Data resources in full, or their ids: the contract leaves the shape open.
    outputs: list[Any] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class OperationError(ApiModel):
    code: str
    message: str = ""
    details: Any = None


class OperationMetadata(ApiModel):
    job_id: str
    site_id: str
    workflow_id: str
    attempt: int = 1
    state: str
    lease_expire_time: datetime | None = None
    lease_seconds: int | None = None
    """The lease's length, by which each heartbeat renews it (servers that state it)."""
    progress: float | None = None
    message: str | None = None
    cancel_requested: bool = False
    paused: bool = False


class Operation(ApiModel):
    id: str
    done: bool
    result: Execution | None = None
    error: OperationError | None = None
    metadata: OperationMetadata
    create_time: datetime | None = None
    update_time: datetime | None = None
    expire_time: datetime | None = None

    @property
    def job_id(self) -> str:
        return self.metadata.job_id

    @property
    def state(self) -> str:
        return self.metadata.state


class Page(ApiModel):
    """One page of a list, as the server sent it (items not yet typed)."""

    resources: list[dict[str, Any]]
    next_page_token: str | None = None
