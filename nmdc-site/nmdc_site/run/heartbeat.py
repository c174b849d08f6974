"""Heartbeats: the claim's lease, renewed on a thread of its own whatever the command does.

The agent PATCHes the operation every ``min(lease / 3, 30 s)``, where ``lease`` is the operation's own lease
length as the server states it (``metadata.lease_seconds``, or ``metadata.lease_expire_time`` minus the time
of the last renewal), so a cancel or pause request is seen within 30 s and two heartbeats may fail before a
lease ends. Each PATCH reports the latest progress and message; its answer brings ``cancel_requested`` and
``paused``.

While the claim is held, a request that fails on the way (API unreachable, 429, 5xx) is retried for as long as
the lease lasts, counted from the last renewal the server confirmed; a paused operation does not lapse, so while
paused it is retried without end. Past that the claim is given up as `LeaseRanOut`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime

from nmdc_site.client import (
    ApiError,
    Conflict,
    Forbidden,
    NmdcClient,
    NotFound,
    Operation,
    RetryNotice,
    RetryPolicy,
    ServerError,
    TooManyRequests,
    TransportError,
)
from nmdc_site.run.errors import LeaseRanOut, OperationLost

log = logging.getLogger("nmdc_site.run")

UNANSWERED = (TransportError, ServerError, TooManyRequests)
"""What a request ends in when the API did not really answer (unreachable, failing, asking to slow down) even
after its retries: while a claim is held, only the lease running out makes these final."""

MAX_INTERVAL = 30.0
MIN_INTERVAL = 0.1


def lease_seconds(operation: Operation) -> float | None:
    """The operation's own lease length: ``metadata.lease_seconds`` where the server states it, else its
    ``lease_expire_time`` minus its last renewal (or creation)."""
    if operation.metadata.lease_seconds:
        return float(operation.metadata.lease_seconds)
    expire = operation.metadata.lease_expire_time
    since = operation.update_time or operation.create_time
    if expire is None or since is None:
        return None
    length = (expire - since).total_seconds()
    return length if length > 0 else None


def heartbeat_interval(lease: float | None) -> float:
    """A third of the lease, at most 30 s (30 s when the lease is unknown)."""
    if lease is None:
        return MAX_INTERVAL
    return max(MIN_INTERVAL, min(MAX_INTERVAL, lease / 3))


class Heartbeat(threading.Thread):
    """Renews the lease every `interval` seconds, reporting progress; learns of cancel and pause requests.

    `lost` is set (to the exception the agent raises) when the operation is no longer ours.
    """

    def __init__(
        self,
        api: NmdcClient,
        operation: Operation,
        *,
        new: bool = True,
        interval: float | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{operation.id}", daemon=True)
        self.api = api
        self.operation_id = operation.id
        self.job_id = operation.metadata.job_id
        self.lease = lease_seconds(operation)
        self.configured_interval = interval
        self.interval = interval or heartbeat_interval(self.lease)
        self.progress: float | None = None
        self.message: str | None = None
        self.cancel_requested = operation.metadata.cancel_requested
        self.paused = operation.metadata.paused
        self.lost: OperationLost | None = None
        self.beats = 0
        self._stop_event = threading.Event()
        self._stopping = stopping or threading.Event()
        self._deadline = self._first_deadline(operation, new)

    # -- the lease, as far as this side knows

    def _first_deadline(self, operation: Operation, new: bool) -> float:
        now = time.monotonic()
        if self.lease is None:
            return math.inf
        if new:
            # Counted from our receipt of the claim: later than the server's, but immune to clock skew.
            return now + self.lease
        # A claim held from before: only the server's clock says how much of its lease is left.
        left = (operation.metadata.lease_expire_time - datetime.now(UTC)).total_seconds()
        return now + max(0.0, min(self.lease, left))

    def remaining(self) -> float:
        """Seconds of lease left, as last confirmed (infinite while paused)."""
        return self._deadline - time.monotonic()

    def _renewed(self, operation: Operation, sent: float) -> None:
        self.cancel_requested = operation.metadata.cancel_requested
        self.paused = operation.metadata.paused
        lease = lease_seconds(operation) or self.lease
        if lease != self.lease:
            self.lease = lease
            self.interval = self.configured_interval or heartbeat_interval(lease)
        # A paused operation does not lapse, unless a cancel is pending (see the server's lapse rule).
        if self.paused and not self.cancel_requested:
            self._deadline = math.inf
        elif lease is not None:
            self._deadline = sent + lease

    # -- retrying while the claim is held

    def _stopped(self) -> bool:
        return self._stop_event.is_set() or self._stopping.is_set()

    def _retry_deadline(self) -> float:
        return -math.inf if self._stopped() else self._deadline

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopped() and (left := end - time.monotonic()) > 0:
            self._stop_event.wait(min(left, 0.2))

    def _announce(self, notice: RetryNotice) -> None:
        log.warning(
            "%s while holding job %s, retry %d in %.1f s (lease ends in %.0f s): %s %s: %s",
            notice.trouble,
            self.job_id,
            notice.number,
            notice.delay,
            max(0.0, self.remaining()),
            notice.method,
            notice.path,
            notice.reason,
        )

    def retry_policy(self) -> RetryPolicy:
        """How requests are retried while the claim is held: for as long as the lease lasts, or until stopped."""
        return RetryPolicy(
            attempts=None, deadline=self._retry_deadline, on_retry=self._announce, sleep=self._sleep
        )

    # -- beating

    def report(self, progress: float | None = None, message: str | None = None) -> None:
        """What the next heartbeat tells: the latest progress (a percentage) and message."""
        if progress is not None:
            self.progress = progress
        if message is not None:
            self.message = message

    def beat(self) -> None:
        """One PATCH, retried while the lease lasts; sets `lost` when the operation is no longer ours."""
        sent = time.monotonic()
        try:
            operation = self.api.heartbeat(self.operation_id, progress=self.progress, message=self.message)
        except (Conflict, NotFound, Forbidden) as exc:
            self.lost = OperationLost(f"the operation is no longer ours: {exc.detail}")
            return
        except UNANSWERED as exc:
            if self._stopped():
                return
            if self.remaining() <= 0:
                self.lost = LeaseRanOut(f"the lease ran out while the API could not renew it: {exc}")
            else:
                log.warning("heartbeat failed (next one in %.1f s): %s", self.interval, exc)
            return
        except ApiError as exc:
            log.warning("heartbeat refused (next one in %.1f s): %s", self.interval, exc)
            return
        self.beats += 1
        self._renewed(operation, sent)
        if operation.done:
            self.lost = OperationLost(f"the operation ended as {operation.metadata.state}")

    def run(self) -> None:
        with self.api.retry_policy(self.retry_policy()):
            while not self._stop_event.wait(self.interval):
                self.beat()
                if self.lost:
                    return

    def stop(self) -> None:
        self._stop_event.set()
