"""Tokens already issued that must stop working: of revoked clients, and of disabled sites and users.

An access token is checked without a database round trip (its signature and claims), so a revocation needs a
list the check can consult. Each API process keeps that list in memory and reloads it every
`NMDC_REVOCATION_REFRESH_SECONDS` (one small query: revocations younger than a token's lifetime, since older
tokens have expired anyway, and the disabled sites and users). A change made through this process applies to
it at once; other processes (workers, replicas) follow within one refresh. The per-request cost is a few set
lookups.

If a reload fails (the database is down), the last list stays in force and the failure is logged: requests
that need the database fail with 503 anyway, and nothing revoked becomes valid again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fastapi.concurrency import run_in_threadpool

from nmdc_runtime.db import Database
from nmdc_runtime.domain.principals import Principal
from nmdc_runtime.store import accounts as accounts_store

log = logging.getLogger("nmdc_runtime.api")

# Tokens are issued with `iat` in whole seconds and the clocks of replicas differ a little.
_SLACK = timedelta(minutes=5)


@dataclass
class Revocations:
    """The principals whose existing tokens are refused (see the module docstring)."""

    database: Database
    refresh_seconds: float
    token_lifetime_seconds: int
    clients: set[str] = field(default_factory=set)
    sites: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    loaded_at: float | None = None
    """`time.monotonic()` of the last successful reload."""

    def refuses(self, principal: Principal) -> bool:
        """Whether a token of `principal` must be refused now."""
        if principal.is_site:
            return principal.name in self.clients or principal.site_id in self.sites
        return principal.name in self.users

    def reload(self) -> None:
        """Read the list from the database (blocking: call it from a thread)."""
        since = datetime.now(UTC) - timedelta(seconds=self.token_lifetime_seconds) - _SLACK
        with self.database.sessionmaker() as session:
            clients, sites, users = accounts_store.refused_principals(session, revoked_since=since)
        self.clients, self.sites, self.users = clients, sites, users
        self.loaded_at = time.monotonic()

    def client_revoked(self, client_id: str) -> None:
        """Apply a revocation this process made, at once."""
        self.clients = self.clients | {client_id}

    def site_standing(self, site_id: str, *, enabled: bool) -> None:
        """Apply a site's disabling or enabling this process made, at once."""
        self.sites = self.sites - {site_id} if enabled else self.sites | {site_id}

    def user_standing(self, username: str, *, enabled: bool) -> None:
        """Apply a user's disabling or enabling this process made, at once."""
        self.users = self.users - {username} if enabled else self.users | {username}

    async def keep_fresh(self) -> None:
        """Reload every `refresh_seconds`, until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await run_in_threadpool(self.reload)
            except Exception as exc:  # the last list stays in force; see the module docstring
                log.warning("could not reload revoked credentials (keeping the last list): %s", exc)
