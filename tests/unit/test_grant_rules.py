"""Who may have an access grant, and until when (`nmdc_runtime.domain.grants.grant_expiry`), and which claims
give their holder grants (`claim_grants_access`): every case."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from nmdc_runtime.domain.errors import Forbidden
from nmdc_runtime.domain.grants import claim_grants_access, grant_expiry
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.domain.states import OperationState

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GRANT_SECONDS = 300
LATEST = NOW + timedelta(seconds=GRANT_SECONDS)


def site(site_id: str) -> Principal:
    return Principal(kind="site_client", name=f"sc-{site_id}", site_id=site_id)


ADMIN = Principal(kind="user", name="staff", admin=True)
SITE_ADMIN = Principal(kind="user", name="alice", site_admin_of=frozenset({"site-d"}))
PLAIN = Principal(kind="user", name="bob")


@pytest.mark.parametrize(
    ("principal", "lease_end", "expected"),
    [
        # The owning site and admins: the full lifetime, claim or none.
        (site("site-d"), None, LATEST),
        (site("site-d"), NOW + timedelta(seconds=5), LATEST),
        (ADMIN, None, LATEST),
        # A holder: the full lifetime, or its lease's end when that comes first.
        (site("site-e"), NOW + timedelta(hours=1), LATEST),
        (site("site-e"), NOW + timedelta(seconds=30), NOW + timedelta(seconds=30)),
        (site("site-e"), LATEST, LATEST),
    ],
)
def test_who_gets_a_grant_and_until_when(principal, lease_end, expected):
    expiry = grant_expiry(
        principal, owner_site_id="site-d", claim_lease_end=lease_end, now=NOW, grant_seconds=GRANT_SECONDS
    )
    assert expiry == expected


def test_the_grants_lifetime_is_the_policys():
    assert grant_expiry(
        site("site-d"), owner_site_id="site-d", claim_lease_end=None, now=NOW, grant_seconds=60
    ) == NOW + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("principal", "lease_end"),
    [
        (site("site-e"), None),  # no active claim on a job that reads it
        (site("site-e"), NOW),  # a lease ending now gives nothing to grant
        (site("site-e"), NOW - timedelta(seconds=1)),  # a paused claim whose holder has not renewed it yet
        (PLAIN, None),
        (PLAIN, NOW + timedelta(hours=1)),  # users hold no claims, whatever is passed
        (SITE_ADMIN, None),  # administering the owning site's credentials is not reading its data
    ],
)
def test_everybody_else_is_refused(principal, lease_end):
    with pytest.raises(Forbidden):
        grant_expiry(
            principal, owner_site_id="site-d", claim_lease_end=lease_end, now=NOW, grant_seconds=GRANT_SECONDS
        )


@pytest.mark.parametrize(
    ("state", "cancel_requested", "lease_ends"),
    itertools.product(
        [OperationState.RUNNING, OperationState.PAUSED, OperationState.SUCCEEDED],
        [False, True],
        [NOW - timedelta(seconds=1), NOW, NOW + timedelta(seconds=1)],
    ),
)
def test_only_an_open_claim_holding_its_lease_with_no_cancel_requested_gives_grants(
    state, cancel_requested, lease_ends
):
    op = SimpleNamespace(
        state=state.value, done=state.done, cancel_requested=cancel_requested, lease_expire_time=lease_ends
    )
    # Paused, a lease past its end still holds (unless a cancel was requested, which ends it anyway).
    holds_lease = lease_ends > NOW or state is OperationState.PAUSED
    expected = not state.done and holds_lease and not cancel_requested
    assert claim_grants_access(op, now=NOW) is expected
