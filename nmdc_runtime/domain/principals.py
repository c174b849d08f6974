"""Who is calling: a user or a site client, and what that lets them do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of an API request or CLI action."""

    kind: Literal["user", "site_client"]
    name: str
    """The username of a user, or the client id of a site client."""
    admin: bool = False
    site_id: str | None = None
    """The site a site client acts for (None for users)."""
    site_admin_of: frozenset[str] = field(default_factory=frozenset)

    @property
    def key(self) -> str:
        """A stable identity, e.g. for idempotency keys: `user:alice` or `site_client:<id>`."""
        return f"{self.kind}:{self.name}"

    @property
    def is_site(self) -> bool:
        return self.kind == "site_client"

    def may_administer_site(self, site_id: str) -> bool:
        """Runtime admins, and users who are admins of that site."""
        return self.admin or site_id in self.site_admin_of
