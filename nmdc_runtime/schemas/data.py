"""Data resources, workflows and jobs as the API takes and shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nmdc_runtime.domain import inputs as inputs_rules
from nmdc_runtime.domain.states import JobStatus, ReleaseCode
from nmdc_runtime.schemas.common import (
    ChosenId,
    JsonObject,
    Name,
    ReadModel,
    StrictBool,
    StrictInt,
    StrictModel,
    Tag,
    Text,
)

MAX_URL_LENGTH = 2048
MAX_CHECKSUMS = 8
MAX_TAGS = 64
MAX_JOB_INPUTS = 1000
MAX_SIZE = 2**63 - 1
"""The largest byte count the database (bigint) holds."""

HEX_LENGTH = {"sha256": 64, "md5": 32}


def _http_url(value: str) -> str:
    # Checked by hand rather than with pydantic's HttpUrl, which rewrites the URL (e.g. adds a slash):
    # sites must get back exactly the URL they registered.
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("the URL scheme must be http or https")
    if not parts.hostname:
        raise ValueError("the URL needs a host")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise ValueError("the URL must not contain whitespace or control characters")
    return value


LeaseSeconds = Annotated[StrictInt, Field(gt=0, le=2**31 - 1)]
"""A lease length in seconds (the server's maximum is a setting, checked where it applies)."""

HttpUrl = Annotated[str, StringConstraints(max_length=MAX_URL_LENGTH), AfterValidator(_http_url)]
Version = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^\S+$")]
OpaqueId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""An id the server made (`dr-...`, `job-...`); only its length is checked, lookups decide the rest."""
Group = Annotated[str, StringConstraints(min_length=1, max_length=inputs_rules.MAX_GROUP_LENGTH)]
"""The group (sample, data generation) data belongs to: any text, global across sites."""


class Checksum(StrictModel):
    """A checksum of a data resource's bytes, as lowercase hex."""

    type: Literal["sha256", "md5"]
    checksum: Annotated[str, StringConstraints(max_length=128)]

    @field_validator("checksum")
    @classmethod
    def _hex_of_type_length(cls, value: str, info: ValidationInfo) -> str:
        if not all(ch in "0123456789abcdefABCDEF" for ch in value):
            raise ValueError("the checksum must be hexadecimal")
        kind = info.data.get("type")
        # A bad `type` is reported on its own field; the length is only checked against a valid one.
        if kind in HEX_LENGTH and len(value) != HEX_LENGTH[kind]:
            raise ValueError(f"a {kind} checksum is {HEX_LENGTH[kind]} hex digits, not {len(value)}")
        return value.lower()


class DataResourceCreate(StrictModel):
    """`POST /data_resources` (and an execution's outputs): the site comes from the caller's token."""

    name: Name
    url: HttpUrl
    data_type: Tag
    size: StrictInt = Field(ge=0, le=MAX_SIZE, description="Bytes.")
    checksums: list[Checksum] = Field(max_length=MAX_CHECKSUMS)
    description: Text | None = None
    requires_grant: StrictBool = Field(
        False,
        description="Its data site serves it only with an access grant (POST /data_resources/{id}:access).",
    )
    group: Group | None = Field(
        None,
        description="The sample or data generation it belongs to, whichever site hosts its data; an "
        "execution's output without one takes its job's.",
    )

    @field_validator("checksums")
    @classmethod
    def _one_per_type(cls, value: list[Checksum]) -> list[Checksum]:
        kinds = [item.type for item in value]
        if len(kinds) != len(set(kinds)):
            raise ValueError("at most one checksum of each type")
        return value


class DataResourceRead(ReadModel):
    """A registered data resource."""

    id: str
    site_id: str
    name: str
    url: str
    data_type: str
    size: int
    checksums: list[Checksum]
    description: str | None = None
    requires_grant: bool = False
    group: str | None = None
    created_at: datetime


class AccessUrl(BaseModel):
    """`POST /data_resources/{id}:access`: where to read a data resource and the headers to send there."""

    url: str
    headers: dict[str, str] = Field(description='`{"Authorization": "Bearer <grant>"}`.')
    expire_time: datetime = Field(
        description="When the grant expires; never after the caller's claim's lease."
    )


JOB_KEYS = ("data_resources", "inputs", "group")
"""The keys of a job's config that jobs fill in from their inputs."""


def _without_job_keys(value: dict[str, Any]) -> dict[str, Any]:
    taken = [key for key in JOB_KEYS if key in value]
    if taken:
        raise ValueError(
            f"{', '.join(f'`{key}`' for key in taken)}: filled in from each job's inputs; leave out of config"
        )
    return value


JobConfig = Annotated[JsonObject, AfterValidator(_without_job_keys)]
"""A workflow's or a job's config: any JSON object but for the keys jobs own (`JOB_KEYS`)."""


class InputRole(StrictModel):
    """One input of a workflow with inputs by role."""

    data_type: Tag
    optional: StrictBool = Field(
        False, description="A job is made without it when its group has none; filled when present."
    )


def _checked_roles(value: dict[str, InputRole]) -> dict[str, InputRole]:
    inputs_rules.check_roles({role: spec.model_dump() for role, spec in value.items()})
    return value


WorkflowInputs = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], InputRole],
    Field(max_length=inputs_rules.MAX_ROLES),
    AfterValidator(_checked_roles),
]
"""A workflow's inputs by role: identifiers, each of a distinct data type, at least one required."""

INPUTS_DESCRIPTION = (
    "Inputs by role (`{role: {data_type, optional}}`): one job per group that has a data resource of every "
    "required role. Its `data_types` are then the roles' (leave them out)."
)


def _not_both(model: BaseModel) -> None:
    if getattr(model, "inputs", None) is not None and "data_types" in model.model_fields_set:
        raise ValueError("give either data_types or inputs: a workflow's inputs decide its data types")


class WorkflowCreate(StrictModel):
    """`POST /workflows`."""

    id: ChosenId
    name: Name
    version: Version
    data_types: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    required_capabilities: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    inputs: WorkflowInputs | None = Field(None, description=INPUTS_DESCRIPTION)
    config: JobConfig = Field(default_factory=dict)
    enabled: StrictBool = True
    lease_seconds: LeaseSeconds | None = Field(
        None,
        description="How long its claims last without a heartbeat (at most NMDC_MAX_LEASE_SECONDS); "
        "unset: NMDC_CLAIM_LEASE_SECONDS.",
    )

    @model_validator(mode="after")
    def _data_types_or_inputs(self) -> WorkflowCreate:
        _not_both(self)
        return self


class WorkflowUpdate(StrictModel):
    """`PATCH /workflows/{id}`: only the fields sent change; none of them may be null."""

    name: Name | None = None
    version: Version | None = None
    data_types: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    inputs: WorkflowInputs | None = Field(
        None, description=INPUTS_DESCRIPTION + " Null: no roles any more (one job per data resource)."
    )
    required_capabilities: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    config: JobConfig | None = None
    enabled: StrictBool | None = None
    lease_seconds: LeaseSeconds | None = Field(
        None, description="Null: back to the default lease (NMDC_CLAIM_LEASE_SECONDS)."
    )

    @model_validator(mode="after")
    def _data_types_or_inputs(self) -> WorkflowUpdate:
        _not_both(self)
        return self

    @field_validator("name", "version", "data_types", "required_capabilities", "config", "enabled")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for fields that were sent: a field left out stays None and unchanged.
        if value is None:
            raise ValueError("may not be null; leave the field out to keep it")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the request sets."""
        return self.model_dump(exclude_unset=True)


class WorkflowRead(ReadModel):
    """A workflow."""

    list_columns: ClassVar = ("id", "enabled", "data_types", "required_capabilities", "lease_seconds", "name")

    id: str
    name: str
    version: str
    data_types: list[str]
    inputs: dict[str, InputRole] | None = None
    required_capabilities: list[str]
    config: dict[str, Any]
    enabled: bool
    lease_seconds: int | None = None
    created_at: datetime
    updated_at: datetime


class JobCreate(StrictModel):
    """`POST /jobs`: a job made by hand; `config` overrides the workflow's config keys it names."""

    workflow_id: ChosenId
    inputs: dict[Annotated[str, StringConstraints(max_length=64)], OpaqueId] = Field(
        default_factory=dict,
        max_length=inputs_rules.MAX_ROLES,
        description="Its inputs by role (`{role: data resource id}`), checked against the workflow's roles.",
    )
    data_resource_ids: list[OpaqueId] | None = Field(
        None,
        max_length=MAX_JOB_INPUTS,
        validate_default=True,
        description="Its inputs, unchecked; required unless `inputs` are given.",
    )
    group: Group | None = Field(None, description="Unset: the group its inputs share, if they share one.")
    config: JobConfig | None = None

    @field_validator("data_resource_ids")
    @classmethod
    def _required_without_inputs(cls, value: list[str] | None, info: ValidationInfo) -> list[str]:
        if value is not None:
            return value
        # As before inputs by role: required, unless they are given.
        if info.data.get("inputs"):
            return []
        raise ValueError("Field required (unless `inputs` are given)")


class JobRead(ReadModel):
    """A job; `config` was fixed when the job was made."""

    list_columns: ClassVar = ("id", "workflow_id", "status", "attempts", "max_attempts", "created_at")

    id: str
    workflow_id: str
    config: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime


class ClaimRequest(StrictModel):
    """`POST /jobs/{job_id}:claim`'s optional body."""

    lease_seconds: LeaseSeconds | None = Field(
        None, description="A lease shorter than the workflow's (more: 422); unset: the workflow's lease."
    )


MAX_RELEASE_MESSAGE = 1024
"""The longest message a release's reason may carry (characters)."""


class ReleaseReason(StrictModel):
    """Why the holding site gives the job back."""

    code: ReleaseCode = Field(
        description="`SITE_FAULT`: the failure was the site's own (its configuration, its resources); "
        "`SHUTDOWN`: a graceful give-back, as a release without a body."
    )
    message: Annotated[str, StringConstraints(max_length=MAX_RELEASE_MESSAGE)] = ""


class ReleaseRequest(StrictModel):
    """`POST /jobs/{job_id}:release`'s optional body."""

    reason: ReleaseReason
