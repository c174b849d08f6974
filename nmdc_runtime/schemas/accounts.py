"""Sites, site credentials and users as the API takes and shows them (never a secret or a hash)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from nmdc_runtime.schemas.common import CHOSEN_ID_PATTERN, Name, ReadModel, StrictBool, StrictModel, Tag

SiteId = Annotated[str, StringConstraints(pattern=CHOSEN_ID_PATTERN)]
"""The same rule as `nmdc-runtime sites create`."""
Username = Annotated[str, StringConstraints(pattern=CHOSEN_ID_PATTERN)]
"""The same rule as `nmdc-runtime users create`."""
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]

MAX_CAPABILITIES = 64
MAX_SITE_ADMIN_OF = 256


class SiteCreate(StrictModel):
    """`POST /sites`."""

    id: SiteId
    name: Name | None = Field(None, description="Display name (default: the id).")
    capabilities: list[Tag] = Field(default_factory=list, max_length=MAX_CAPABILITIES)


class SiteDrainRead(ReadModel):
    """Why a site is drained: since when, and the operations whose faults drained it."""

    since: datetime = Field(description="When the last of `operations` ended: the site was drained then.")
    operations: list[str] = Field(
        description="The operations, in the order they ended, that each failed at the site, in a row."
    )


class SiteRead(ReadModel):
    """A site; its credentials are never shown here."""

    list_columns: ClassVar = ("id", "capabilities", "disabled_at", "name")

    id: str
    name: str
    capabilities: list[str]
    disabled_at: datetime | None = Field(None, description="Set while an admin has disabled the site.")
    drained: SiteDrainRead | None = Field(
        None,
        description="Set while the site is drained: its last NMDC_SITE_DRAIN_AFTER judged operations in a row "
        "each failed at the site, so it claims no new job until staff or its admin lift it "
        "(POST /sites/{site_id}:undrain).",
    )
    created_at: datetime


class SiteClientRead(ReadModel):
    """A site's client credentials, as listed: never the secret."""

    list_columns: ClassVar = ("client_id", "created_at", "revoked_at")

    client_id: str
    site_id: str
    created_at: datetime
    revoked_at: datetime | None = Field(None, description="Set once revoked: the secret gets no token.")


class SiteCredentials(ReadModel):
    """New site client credentials: the secret is shown this once and stored only as a hash."""

    client_id: str
    client_secret: str


class UserCreate(StrictModel):
    """`POST /users`."""

    username: Username
    password: Password
    admin: StrictBool = False
    site_admin_of: list[SiteId] = Field(default_factory=list, max_length=MAX_SITE_ADMIN_OF)


class UserRead(ReadModel):
    """A user, without the password."""

    username: str
    admin: bool
    site_admin_of: list[str]
    disabled_at: datetime | None = Field(None, description="Set while an admin has disabled the user.")
    created_at: datetime


class PrincipalRead(ReadModel):
    """`GET /users/me`: who the token belongs to (a user has `username`, a site client `client_id`)."""

    kind: Literal["user", "site_client"]
    username: str | None = None
    client_id: str | None = None
    site_id: str | None = None
    admin: bool
    site_admin_of: list[str] | None = None
