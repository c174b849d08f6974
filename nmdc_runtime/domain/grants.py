"""Who may read a data resource from the site that serves it, and for how long (an access grant).

A grant lasts `grant_seconds` at most (`NMDC_GRANT_SECONDS`), and for a claim holder never past the claim's
lease. A data site checks a grant when a download starts, so a download that started in time runs to its end;
a grant once given cannot be taken back, and stays valid until it expires.

A claim whose cancel has been requested gets no grant: the admin asked its holder to stop, so it must not start
reading more data (its lease, see `domain.operations.request_cancel`, ends within the cancel's grace).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from nmdc_runtime.domain.errors import Forbidden
from nmdc_runtime.domain.operations import Operation, lease_lapsed
from nmdc_runtime.domain.principals import Principal


def claim_grants_access(op: Operation, *, now: datetime) -> bool:
    """Whether the holder of `op` may have access grants to its job's inputs at `now`: the operation is open,
    its lease has not lapsed, and no cancel has been requested (the SQL form is
    `store.rules.claim_grants_access`)."""
    return not op.done and not lease_lapsed(op, now=now) and not op.cancel_requested


def grant_expiry(
    principal: Principal,
    *,
    owner_site_id: str,
    claim_lease_end: datetime | None,
    now: datetime,
    grant_seconds: int,
) -> datetime:
    """When a grant for `principal` to read a data resource of `owner_site_id` expires.

    The owning site and admins get `grant_seconds`; a site holding a claim that grants access
    (`claim_grants_access`) on a job that reads the resource gets as long, but never past that claim's lease
    (`claim_lease_end`: the latest lease end among its claims on such jobs that grant access, None when it
    holds none). Anyone else: Forbidden.
    """
    latest = now + timedelta(seconds=grant_seconds)
    if principal.admin or (principal.is_site and principal.site_id == owner_site_id):
        return latest
    # A paused claim keeps its lease past lease_expire_time; its holder's next heartbeat moves that forward.
    if principal.is_site and claim_lease_end is not None and claim_lease_end > now:
        return min(latest, claim_lease_end)
    raise Forbidden(
        "only a site holding an active claim on a job that reads this data resource (with no cancel "
        "requested), the site that owns it, or an admin may have an access grant"
    )
