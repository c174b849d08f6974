"""Access grants: a signed permission to read one data resource from the data site that serves it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy.orm import Session

from nmdc_runtime.domain.grants import grant_expiry
from nmdc_runtime.domain.policy import Policy
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.grants import GrantKeys, issue_grant
from nmdc_runtime.store import data_resources as data_resources_store
from nmdc_runtime.store import operations as operations_store


class Grant(NamedTuple):
    """Where to read the data resource, the grant to send there, and when it expires."""

    url: str
    token: str
    expire_time: datetime


def grant_access(
    session: Session,
    *,
    data_resource_id: str,
    principal: Principal,
    keys: GrantKeys,
    issuer: str,
    policy: Policy,
    now: datetime | None = None,
) -> Grant:
    """A grant for `principal` to read a data resource (`domain.grants.grant_expiry` says who may, and for how
    long). NotFound for an unknown data resource; Forbidden for a caller who may not read it.

    It changes nothing: a lapsed claim found here is only not counted (the next request that touches it ends it).
    """
    now = now or datetime.now(UTC)
    resource = data_resources_store.get_data_resource(session, data_resource_id=data_resource_id)
    lease_end = None
    if principal.is_site and principal.site_id != resource.site_id:
        lease_end = operations_store.active_claim_lease_end(
            session, site_id=principal.site_id, data_resource_id=resource.id, now=now
        )
    expires = grant_expiry(
        principal,
        owner_site_id=resource.site_id,
        claim_lease_end=lease_end,
        now=now,
        grant_seconds=policy.grant_seconds,
    )
    token, expire_time = issue_grant(
        keys,
        issuer=issuer,
        data_resource_id=resource.id,
        url=resource.url,
        owner_site_id=resource.site_id,
        requester=principal,
        expires_at=expires,
        now=now,
    )
    return Grant(url=resource.url, token=token, expire_time=expire_time)
