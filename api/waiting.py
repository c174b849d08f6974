"""Requests that wait: `POST /jobs:claimNext` with a `wait_seconds`, and `GET /operations/{op_id}:wait`.

One `Waiters` per API process. A waiting request is an `asyncio.Event` and a coroutine: it holds no thread and no
database connection while it waits, only while it looks (a claim attempt or a read, in the thread pool, a few
at a time: `LOOKS_AT_ONCE`). What wakes it:

- **a job became unclaimed**: the process holds one connection of its own that LISTENs on
  `store.notices.JOBS_UNCLAIMED` (the database's triggers send the job's workflow at each commit that makes
  jobs unclaimed, whichever process, replica or Dagster sensor made it); each notification wakes the waiters
  of its workflow (and those of any workflow), which look again;
- **a lease lapsed**: that sends nothing until something ends it, so every `SWEEP_SECONDS` the process asks the
  database which workflows had a lease lapse since its last look (`operations_store.workflows_with_leases_lapsed`,
  one indexed query, only while jobs are awaited) and wakes their waiters;
- **an operation ended**: every `OPERATION_POLL_SECONDS`, while operations are awaited, one query tells which
  of them are done (an ending sends nothing: it would make every finishing PATCH notify, and a commit that
  notifies takes a lock every other notifying commit waits for);
- **the process stops** (`begin_shutdown`, on SIGTERM or SIGINT): every waiter answers at once;
- **the client went away**: the request stops waiting (a claim it made meanwhile is kept; the retry's
  Idempotency-Key finds it).

A broken listening connection is opened again at the next sweep; meanwhile, and once it is back (notifications
may have been lost), every job waiter looks again at each sweep. Each waiter looks when it starts, after it is
registered, so a notification that arrives during its first look is not lost.

Bounded: `max_waiters` per process and `max_per_site` per site (or user) per process; a request that would
wait past them gets 429 with `Retry-After` (it still claims or reads first: the bound is on waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg2
from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive

from nmdc_runtime.db import Database
from nmdc_runtime.store import notices as notices_store
from nmdc_runtime.store import operations as operations_store

log = logging.getLogger("nmdc_runtime.api")

T = TypeVar("T")

SWEEP_SECONDS = 2.0
"""How often the process looks for leases that lapsed (and reopens a broken listening connection)."""
OPERATION_POLL_SECONDS = 0.25
"""How often the process asks which of the awaited operations are done."""
CHECK_LISTENER_SECONDS = 30.0
"""How often the listening connection is tried with a round trip (a silent peer breaks no socket)."""
LOOKS_AT_ONCE = 8
"""Claim attempts and reads of waiting requests that run at once in a process: below its pool of 10
connections, so a burst of wake-ups queues here and never waits past the pool's deadline (503)."""
RETRY_AFTER_SECONDS = 5


@dataclass(eq=False)
class _Waiter:
    key: str
    """The site (or user) it counts against."""
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False
    """The client went away."""


class Waiters:
    """The waiting requests of this process, and what wakes them (see the module docstring)."""

    def __init__(
        self, database: Database, *, max_waiters: int, max_per_site: int, listen_url: str | None = None
    ) -> None:
        self.database = database
        self.listen_url = listen_url
        """Where to LISTEN (None: where the database's pools connect)."""
        self.max_waiters = max_waiters
        self.max_per_site = max_per_site
        self.closing = False
        self._per_key: Counter[str] = Counter()
        self._jobs: dict[str | None, set[_Waiter]] = {}
        """Job waiters by workflow (None: of any workflow)."""
        self._operations: dict[str, set[_Waiter]] = {}
        self._looks = asyncio.Semaphore(LOOKS_AT_ONCE)
        self._listener: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._signals: dict[int, tuple[Callable, Any]] = {}

    @property
    def count(self) -> int:
        """Requests waiting now."""
        return sum(self._per_key.values())

    # ---- life ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, start the sweeps, and answer every waiter as soon as SIGTERM or SIGINT comes (when this
        runs on the main thread: under uvicorn, whose own handler is called after)."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._listen()
        except (psycopg2.Error, OSError) as exc:
            log.warning("could not LISTEN for jobs (%s); waiters look again every %g s", exc, SWEEP_SECONDS)
        self._task = asyncio.create_task(self._keep())
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._chain_signal(sig)

    def _chain_signal(self, sig: int) -> None:
        previous = signal.getsignal(sig)
        if not callable(previous):
            return  # Nobody serves this process on a signal of its own: it stops the process as it is.

        def stopping(signum: int, frame: Any) -> None:
            # In the signal handler: only hand the work to the loop, in a context of its own: the handler
            # runs in whatever context the main thread was in, a request's, whose id the log line would carry.
            self._loop.call_soon_threadsafe(self.begin_shutdown, context=contextvars.Context())
            previous(signum, frame)

        signal.signal(sig, stopping)
        self._signals[sig] = (stopping, previous)

    def begin_shutdown(self) -> None:
        """Answer every waiter now (204, or the operation as it is), and make new ones answer at once."""
        if not self.closing:
            log.info("stopping: answering %d waiting request(s)", self.count)
        self.closing = True
        self._wake_all()

    async def close(self) -> None:
        """Answer every waiter, stop the sweeps and close the listening connection."""
        self.begin_shutdown()
        for sig, (ours, previous) in self._signals.items():
            if signal.getsignal(sig) is ours:
                signal.signal(sig, previous)
        self._signals.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._drop_listener()

    # ---- waiting ---------------------------------------------------------------------------------------

    async def look(self, work: Callable[[], T]) -> T:
        """`work()` in the thread pool, with at most `LOOKS_AT_ONCE` of them running in the process."""
        async with self._looks:
            return await run_in_threadpool(work)

    async def claim(
        self,
        attempt: Callable[[], T | None],
        *,
        key: str,
        workflow_ids: list[str] | None,
        wait_seconds: float,
        receive: Receive,
    ) -> T | None:
        """`attempt()`'s first answer that is not None: at once, or after a wake-up within `wait_seconds`;
        None when the time is up, the process stops or the client went away. 429 when it would wait past
        the bounds."""
        if wait_seconds <= 0 or self.closing:
            return await self.look(attempt)
        with self._waiting(key, receive, self._jobs, workflow_ids or [None]) as waiter:
            if waiter is None:
                found = await self.look(attempt)
                if found is None:
                    raise self._too_many(key)
                return found
            deadline = self._loop.time() + wait_seconds
            while True:
                waiter.woken.clear()
                found = await self.look(attempt)
                if found is not None or not await self._sleep(waiter, deadline):
                    return found

    async def operation(
        self,
        read: Callable[[], T],
        done: Callable[[T], bool],
        *,
        op_id: str,
        key: str,
        timeout_seconds: float,
        receive: Receive,
    ) -> T:
        """`read()` once `done` says so, or when `timeout_seconds` are up, the process stops or the client went
        away (what it reads then). 429 when it would wait past the bounds."""
        current = await self.look(read)
        if done(current) or timeout_seconds <= 0 or self.closing:
            return current
        with self._waiting(key, receive, self._operations, [op_id]) as waiter:
            if waiter is None:
                raise self._too_many(key)
            deadline = self._loop.time() + timeout_seconds
            await self._sleep(waiter, deadline)
            return current if waiter.gone else await self.look(read)

    async def _sleep(self, waiter: _Waiter, deadline: float) -> bool:
        """Wait to be woken before `deadline`: whether to look again (False: the time is up, the process
        stops or the client went away)."""
        remaining = deadline - self._loop.time()
        if remaining <= 0 or self.closing:
            return False
        try:
            async with asyncio.timeout(remaining):
                await waiter.woken.wait()
        except TimeoutError:
            return False
        return not (self.closing or waiter.gone)

    @contextlib.contextmanager
    def _waiting(
        self, key: str, receive: Receive, index: dict[Any, set[_Waiter]], names: list[Any]
    ) -> Iterator[_Waiter | None]:
        """A waiter registered under each of `names` in `index`, while the block runs; None past the bounds."""
        if self.count >= self.max_waiters or self._per_key[key] >= self.max_per_site:
            yield None
            return
        waiter = _Waiter(key)
        self._per_key[key] += 1
        for name in names:
            index.setdefault(name, set()).add(waiter)
        watch = asyncio.create_task(self._watch(receive, waiter))
        try:
            yield waiter
        finally:
            watch.cancel()
            for name in names:
                kept = index.get(name)
                if kept is not None:
                    kept.discard(waiter)
                    if not kept:
                        del index[name]
            self._per_key[key] -= 1
            if not self._per_key[key]:
                del self._per_key[key]

    @staticmethod
    async def _watch(receive: Receive, waiter: _Waiter) -> None:
        """Wake `waiter` as gone when its client disconnects (the request's body has been read already)."""
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # a connection that cannot be read from is gone too
            pass
        waiter.gone = True
        waiter.woken.set()

    def _too_many(self, key: str) -> HTTPException:
        whose = "in this process" if self.count >= self.max_waiters else f"for {key} in this process"
        return HTTPException(
            429,
            detail=f"too many requests are waiting {whose}; try again later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    # ---- waking ----------------------------------------------------------------------------------------

    def _wake_jobs(self, workflow_id: str | None) -> None:
        """Wake the job waiters of `workflow_id` and those of any workflow (None: every job waiter)."""
        groups = (
            self._jobs.values()
            if workflow_id is None
            else (self._jobs.get(workflow_id, ()), self._jobs.get(None, ()))
        )
        for group in groups:
            for waiter in group:
                waiter.woken.set()

    def _wake_all(self) -> None:
        self._wake_jobs(None)
        for group in self._operations.values():
            for waiter in group:
                waiter.woken.set()

    async def _listen(self) -> None:
        def connect() -> Any:
            connection = self.database.listening_connection(self.listen_url)
            try:
                notices_store.listen(connection)
            except BaseException:
                connection.close()
                raise
            return connection

        self._listener = await run_in_threadpool(connect)
        self._loop.add_reader(self._listener.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            workflows = notices_store.received(self._listener)
        except psycopg2.Error as exc:
            log.warning("the connection listening for jobs broke (%s); opening it again", exc)
            self._drop_listener()
            return
        for workflow_id in dict.fromkeys(workflows):
            self._wake_jobs(workflow_id)

    def _drop_listener(self) -> None:
        if self._listener is None:
            return
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._listener.fileno())
        with contextlib.suppress(Exception):
            self._listener.close()
        self._listener = None

    async def _check_listener(self) -> None:
        """One round trip on the listening connection, off the loop (notifications it brings are kept)."""
        listener = self._listener
        self._loop.remove_reader(listener.fileno())
        try:
            await run_in_threadpool(notices_store.check, listener)
            workflows = notices_store.received(listener, read=False)
        except psycopg2.Error as exc:
            log.warning("the connection listening for jobs broke (%s); opening it again", exc)
            self._drop_listener()
            return
        self._loop.add_reader(listener.fileno(), self._readable)
        for workflow_id in dict.fromkeys(workflows):
            self._wake_jobs(workflow_id)

    async def _keep(self) -> None:
        """The sweeps (module docstring); a failed one is logged and tried again at its next turn."""
        swept_to = datetime.now(UTC)
        next_sweep = next_check = self._loop.time()
        quiet_until = 0.0
        while True:
            await asyncio.sleep(OPERATION_POLL_SECONDS)
            try:
                if self._operations:
                    await self._poll_operations()
                now = self._loop.time()
                if now >= next_sweep:
                    next_sweep = now + SWEEP_SECONDS
                    swept_to = await self._sweep(swept_to)
                if self._listener is not None and now >= next_check:
                    next_check = now + CHECK_LISTENER_SECONDS
                    await self._check_listener()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Said once a minute at most: with the database down it fails at every turn.
                if self._loop.time() >= quiet_until:
                    quiet_until = self._loop.time() + 60
                    log.warning("waiters' sweep failed (%s: %s); trying again", type(exc).__name__, exc)

    async def _poll_operations(self) -> None:
        awaited = list(self._operations)

        def read() -> set[str]:
            with self.database.read_sessionmaker() as session:
                return operations_store.not_done(session, op_ids=awaited)

        for op_id in set(awaited) - await self.look(read):
            for waiter in self._operations.get(op_id, ()):
                waiter.woken.set()

    async def _sweep(self, since: datetime) -> datetime:
        """Wake the waiters of workflows whose leases lapsed after `since`; reopen a broken listener (every
        job waiter then looks again). Returns where the next sweep starts."""
        now = datetime.now(UTC)
        if self._listener is None:
            with contextlib.suppress(psycopg2.Error, OSError):
                await self._listen()
                log.info("listening for jobs again")
            self._wake_jobs(None)
            return now
        if not self._jobs:
            return now

        def read() -> list[str]:
            with self.database.read_sessionmaker() as session:
                return operations_store.workflows_with_leases_lapsed(session, since=since, now=now)

        for workflow_id in await self.look(read):
            self._wake_jobs(workflow_id)
        return now
