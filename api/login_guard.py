"""`POST /token` under attack: failed attempts are limited, and the slow hash checks are bounded.

- **Failures are counted** per (client id or username, source address) and per source address, in a moving
  window (the `limits` package, in memory). Past either limit the address gets 429 with `Retry-After` before any
  hash is checked, so a flood costs a dictionary lookup. Only failures count, and only from the address that
  failed: correct credentials from an address that is not flooding are never refused, so nobody can lock a
  site or a user out from elsewhere.
- **Hash checks are bounded**: argon2 takes 64 MiB and about 0.2 s of a core per check. At most
  `NMDC_HASH_CONCURRENCY` run at once per process, in threads of their own (not the pool every sync route
  shares) at the lowest CPU priority, so other requests preempt them; at most `NMDC_LOGIN_QUEUE_LIMIT` more
  wait, for `MAX_WAIT_SECONDS` at most, and the rest get 429 at once. Memory stays at a few checks' worth
  whatever the flood, and no login waits long for an answer.
- **The source address** is the peer's, or, when the peer is a proxy named in `NMDC_TRUSTED_PROXIES`, the
  nearest address in `X-Forwarded-For` that is not one of those proxies.

Counts live in each API process: with N workers an address may fail up to N times the limit before all of
them refuse it. Behind a load balancer, keep the client's address in `X-Forwarded-For`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

T = TypeVar("T")

MAX_WAIT_SECONDS = 5.0
"""How long a login may wait for a hash check slot before it gets 429."""


class TooManyAttempts(Exception):
    """The caller must wait `retry_after` seconds before trying again."""

    def __init__(self, retry_after: int, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = max(1, retry_after)
        self.reason = reason


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[str]) -> str:
    """The address a request came from: the peer, unless the peer is a trusted proxy (see the docstring)."""
    networks = [ipaddress.ip_network(item, strict=False) for item in trusted]

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    address = peer or "unknown"
    if not networks or not is_trusted(address) or not forwarded_for:
        return address
    # Right to left: each trusted proxy appended the address it received the request from.
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        if not is_trusted(hop):
            return hop
        address = hop
    return address


class LoginGuard:
    """Failure counts and the bounded hash checks of one API process (see the module docstring)."""

    def __init__(
        self,
        *,
        max_failures: int,
        max_failures_per_address: int,
        window_seconds: int,
        hash_concurrency: int,
        queue_limit: int,
    ) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_name = RateLimitItemPerSecond(max_failures, window_seconds)
        self._per_address = RateLimitItemPerSecond(max_failures_per_address, window_seconds)
        self._checks = ThreadPoolExecutor(
            max_workers=hash_concurrency, thread_name_prefix="nmdc-hash", initializer=_lowest_priority
        )
        self._slots = asyncio.Semaphore(hash_concurrency)
        self._capacity = hash_concurrency + queue_limit
        self._admitted = 0
        self._lock = threading.Lock()

    def check(self, name: str, address: str) -> None:
        """TooManyAttempts when the address has failed too often, for this name or in all."""
        for limit, key, reason in (
            (self._per_address, ("address", address), "too many failed logins from this address"),
            (
                self._per_name,
                ("name", name, address),
                "too many failed logins for this account from this address",
            ),
        ):
            if not self._limiter.test(limit, *key):
                reset = self._limiter.get_window_stats(limit, *key).reset_time
                raise TooManyAttempts(math.ceil(reset - time.time()), reason)

    def failed(self, name: str, address: str) -> None:
        """Count a failed attempt."""
        self._limiter.hit(self._per_address, "address", address)
        self._limiter.hit(self._per_name, "name", name, address)

    async def run_check(self, check: Callable[[], T]) -> T:
        """Run a hash check in the bounded pool; TooManyAttempts when the queue is full."""
        with self._lock:
            if self._admitted >= self._capacity:
                raise TooManyAttempts(1, "too many logins in progress")
            self._admitted += 1
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), MAX_WAIT_SECONDS)
            except TimeoutError:
                raise TooManyAttempts(1, "too many logins in progress") from None
            try:
                return await asyncio.get_running_loop().run_in_executor(self._checks, check)
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._admitted -= 1

    def close(self) -> None:
        self._checks.shutdown(wait=False, cancel_futures=True)


def _lowest_priority() -> None:
    # On Linux a nice value belongs to a thread: this lowers only the hash thread, not the event loop.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
