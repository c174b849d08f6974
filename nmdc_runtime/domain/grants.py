"""Who may read a data resource from the site that serves it, and for how long (an access grant)."""

from __future__ import annotations

from datetime import datetime, timedelta

from nmdc_runtime.domain.errors import Forbidden
from nmdc_runtime.domain.principals import Principal

GRANT_SECONDS = 300
"""The longest a grant lasts. A data site checks it when a download starts, so a long download outlives it."""


def grant_expiry(
    principal: Principal, *, owner_site_id: str, claim_lease_end: datetime | None, now: datetime
) -> datetime:
    """When a grant for `principal` to read a data resource of `owner_site_id` expires.

    The owning site and admins get `GRANT_SECONDS`; a site holding an active claim on a job that reads the
    resource gets as long, but never past that claim's lease (`claim_lease_end`: the latest lease end among its
    active claims on such jobs, None when it holds none). Anyone else: Forbidden.
    """
    latest = now + timedelta(seconds=GRANT_SECONDS)
    if principal.admin or (principal.is_site and principal.site_id == owner_site_id):
        return latest
    # A paused claim keeps its lease past lease_expire_time; its holder's next heartbeat moves that forward.
    if principal.is_site and claim_lease_end is not None and claim_lease_end > now:
        return min(latest, claim_lease_end)
    raise Forbidden(
        "only a site holding an active claim on a job that reads this data resource, the site that owns it, "
        "or an admin may have an access grant"
    )
