"""A job's inputs: downloaded from the data sites that serve them, and verified against the size and
checksums the job names before anything runs on them.

What fails is named by whose fault it is: an input that differs from what the job declares is DATA_LOSS
(`InputError`); a data site that cannot be reached, refuses, redirects where the agent does not follow, sends
slower than the floor (`Pace`), or names a host that is not a public address and that `--allow-host` does not
admit is UNAVAILABLE (`InputUnavailable`); the site's own disk failing it is a `SiteFault`.

A host at a private address is the data site's doing, as a redirect there is: counted as the executing site's
own fault, one data resource at such an address would stop every agent that claimed its job and, three in a
row, drain their sites."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import tenacity
from tqdm import tqdm

from nmdc_site.client import DataResource, Job
from nmdc_site.files import CHUNK, digests
from nmdc_site.run.egress import Egress, NotAllowed, Refused
from nmdc_site.run.errors import Interrupted, SiteFault

log = logging.getLogger("nmdc_site.run")

SUPPORTED_DIGESTS = ("sha256", "md5")

Report = Callable[[str], None]


class InputError(Exception):
    """An input is not what the job says (size or checksum mismatch, more bytes than declared): error code
    DATA_LOSS.

    `str()` is what the operation's error says, so it names what failed and never repeats what a data site (or
    a service behind it) answered; `detail` says more, for the agent's own log.
    """

    code = "DATA_LOSS"

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


class InputUnavailable(InputError):
    """An input could not be fetched (no connection, an HTTP error status, a refused redirect, a host at an
    address the agent does not download from, a data site slower than the agent's floor, no access grant):
    error code UNAVAILABLE."""

    code = "UNAVAILABLE"


Access = Callable[[DataResource], tuple[str, dict[str, str]]]
"""Where to fetch a data resource that needs a grant, and the headers that carry the grant."""


def _safe_name(name: str) -> str:
    base = Path(name).name or "data"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in base).lstrip(".") or "data"


def verify(path: Path, resource: DataResource) -> None:
    """Raise `InputError` unless the file has the resource's size and every supported checksum."""
    expected = {c.type: c.checksum.lower() for c in resource.checksums if c.type in SUPPORTED_DIGESTS}
    size, actual = digests(path, tuple(expected) or ("sha256",))
    if size != resource.size:
        raise InputError(
            f"input {resource.id}: its size differs from the declared {resource.size} bytes",
            f"size mismatch for {resource.url}: expected {resource.size} bytes, got {size}",
        )
    for kind, value in expected.items():
        if actual[kind] != value:
            raise InputError(
                f"input {resource.id}: its {kind} differs from the declared one",
                f"{kind} mismatch for {resource.url}: expected {value}, got {actual[kind]}",
            )


@dataclass(frozen=True)
class Pace:
    """The slowest a download may go: at least `min_rate` bytes a second over every `stall_seconds` (0: no
    floor)."""

    min_rate: float = 16 * 1024
    stall_seconds: float = 60.0


class Meter:
    """Counts a download's bytes and says when the last `pace.stall_seconds` brought fewer than `min_rate` a
    second. `add` is called by the thread that reads; `stalled` by the one that watches, a few times a second."""

    def __init__(self, pace: Pace, clock: Callable[[], float] = time.monotonic) -> None:
        self.pace = pace
        self.clock = clock
        self.received = 0
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])

    def add(self, count: int) -> None:
        self.received += count

    def stalled(self) -> bool:
        """Whether a whole window has passed with fewer bytes than the floor (the waiting for an answer, and
        between retries, included)."""
        now, received = self.clock(), self.received
        self._samples.append((now, received))
        window = self.pace.stall_seconds
        # Keep the newest sample at least a window old, and everything after it.
        while len(self._samples) > 1 and self._samples[1][0] <= now - window:
            self._samples.popleft()
        since, then = self._samples[0]
        return now - since >= window and received - then < self.pace.min_rate * window


def _cut(response: httpx.Response | None) -> None:
    """Shut the socket a response is being read from, so that a read blocked on it returns at once."""
    stream = response.extensions.get("network_stream") if response is not None else None
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _GivenUp(Exception):
    """The watching thread gave up on the download (a stall, or the agent stopping)."""


WATCH_INTERVAL = 0.2
"""Seconds between two looks of the watching thread at a download."""


def download(
    resource: DataResource,
    dest: Path,
    egress: Egress,
    access: Access | None = None,
    report: Report | None = None,
    *,
    pace: Pace = Pace(),
    stopping: threading.Event | None = None,
) -> None:
    """Fetch a resource to `dest` (through a ``.part`` file, removed on failure), with a progress bar, by the
    rules of `egress`; retries connection errors. Stops at the declared size: more is DATA_LOSS.

    A resource with `requires_grant` is fetched where `access` says, with the grant it gives (asked for again
    on each try, so a retry never carries an expired one). `report` hears how far the download got.

    The bytes are read on a thread of their own while this one watches: slower than `pace` ends the download
    (UNAVAILABLE), and `stopping` ends it at once (`Interrupted`), whatever the data site does.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    name = resource.id
    meter = Meter(pace)
    given_up = threading.Event()
    reading: list[httpx.Response] = []

    def retryable(exc: BaseException) -> bool:
        return isinstance(exc, httpx.TransportError) and not given_up.is_set()

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_exponential_jitter(initial=0.5, max=5),
        retry=tenacity.retry_if_exception(retryable),
        sleep=lambda seconds: given_up.wait(seconds),
        reraise=True,
    )
    def fetch() -> None:
        if given_up.is_set():
            raise _GivenUp()
        url, headers = access(resource) if resource.requires_grant and access else (resource.url, {})
        # identity: the declared size is of the bytes themselves, and a compressed answer could expand past it.
        headers = {**headers, "Accept-Encoding": "identity"}
        with (
            httpx.Client(timeout=60, trust_env=False) as client,
            egress.get(client, url, headers) as response,
        ):
            reading[:] = [response]
            if given_up.is_set():
                raise _GivenUp()
            if response.status_code != 200:
                raise InputUnavailable(
                    f"input {name} could not be fetched: the data site answered with an error",
                    f"GET {url} -> {response.status_code}",
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > resource.size:
                raise InputError(
                    f"input {name}: the data site offered more than the declared {resource.size} bytes",
                    f"GET {url}: Content-Length {declared}, declared {resource.size}",
                )
            with (
                part.open("wb") as handle,
                tqdm(
                    total=resource.size or None,
                    unit="B",
                    unit_scale=True,
                    desc=resource.name[-30:],
                    disable=None,
                    file=sys.stderr,
                ) as bar,
            ):
                done = 0
                for chunk in response.iter_raw(CHUNK):
                    if given_up.is_set():
                        raise _GivenUp()
                    done += len(chunk)
                    meter.add(len(chunk))
                    if done > resource.size:
                        raise InputError(
                            f"input {name}: the data site sent more than the declared {resource.size} bytes",
                            f"GET {url}: past the declared {resource.size} bytes; stopped",
                        )
                    handle.write(chunk)
                    bar.update(len(chunk))
                    if report:
                        report(f"downloading {resource.name}: {done}/{resource.size} bytes")

    failure: list[BaseException] = []

    def read() -> None:
        try:
            fetch()
        except BaseException as exc:  # handed to the watching thread, which raises it
            failure.append(exc)

    reader = threading.Thread(target=read, name=f"download-{name}", daemon=True)
    reader.start()
    try:
        while reader.is_alive():
            reader.join(WATCH_INTERVAL)
            if not reader.is_alive():
                break
            if stopping is not None and stopping.is_set():
                raise Interrupted()
            if meter.stalled():
                raise InputUnavailable(
                    f"input {name} could not be fetched: its data site sent less than {pace.min_rate:g} bytes "
                    f"a second for {pace.stall_seconds:g} s",
                    f"{resource.url}: {meter.received} bytes in all; stalled below {pace.min_rate:g} B/s "
                    f"for {pace.stall_seconds:g} s",
                )
        if failure:
            raise failure[0]
        os.replace(part, dest)
    except NotAllowed as exc:
        raise InputUnavailable(
            f"input {name} could not be fetched: its host is not a public address, and --allow-host does not "
            "admit it",
            f"{resource.url}: {exc}",
        ) from exc
    except Refused as exc:
        raise InputUnavailable(
            f"input {name} could not be fetched: the download was refused (a redirect the agent does not "
            "follow)",
            f"{resource.url}: {exc}",
        ) from exc
    except httpx.HTTPError as exc:
        raise InputUnavailable(
            f"input {name} could not be fetched: no answer from its data site",
            f"{resource.url}: {type(exc).__name__}: {exc}",
        ) from exc
    except OSError as exc:
        # Our own files (the .part file, the inputs folder): the data site has no part in it.
        raise SiteFault(f"input {name} could not be stored: {exc.strerror or exc}", f"{part}: {exc}") from exc
    finally:
        if reader.is_alive():
            given_up.set()
            _cut(reading[0] if reading else None)
            reader.join(2)  # the reader ends as soon as its read returns: then nothing writes the .part file
        part.unlink(missing_ok=True)  # what a failed try left; nothing after a success


def fetch_inputs(
    job: Job,
    job_dir: Path,
    egress: Egress,
    access: Access | None = None,
    report: Report | None = None,
    *,
    pace: Pace = Pace(),
    stopping: threading.Event | None = None,
) -> list[Path]:
    """Every input of the job, downloaded (see `download`) and verified; inputs already here and intact are
    kept."""
    paths = []
    for resource in job.data_resources:
        path = job_dir / "inputs" / resource.id / _safe_name(resource.name)
        if path.exists():
            try:
                verify(path, resource)
                log.info("input %s already here and intact", resource.id)
                paths.append(path)
                continue
            except InputError:
                path.unlink()
        log.info("downloading %s from %s", resource.id, resource.url)
        download(resource, path, egress, access, report, pace=pace, stopping=stopping)
        try:
            verify(path, resource)
        except InputError:
            # Keep the evidence out of the way of the next attempt.
            os.replace(path, path.with_name(path.name + ".rejected"))
            raise
        paths.append(path)
    return paths
