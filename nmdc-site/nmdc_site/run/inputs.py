"""A job's inputs: downloaded from the data sites that serve them, and verified against the size and
checksums the job names before anything runs on them."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import tenacity
from tqdm import tqdm

from nmdc_site.client import DataResource, Job
from nmdc_site.files import CHUNK, digests

log = logging.getLogger("nmdc_site.run")

SUPPORTED_DIGESTS = ("sha256", "md5")

Report = Callable[[str], None]


class InputError(Exception):
    """An input is not what the job says (size or checksum mismatch): error code DATA_LOSS."""

    code = "DATA_LOSS"


class InputUnavailable(InputError):
    """An input could not be fetched (connection refused, an HTTP error status): error code UNAVAILABLE."""

    code = "UNAVAILABLE"


def _safe_name(name: str) -> str:
    base = Path(name).name or "data"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in base).lstrip(".") or "data"


def verify(path: Path, resource: DataResource) -> None:
    """Raise `InputError` unless the file has the resource's size and every supported checksum."""
    expected = {c.type: c.checksum.lower() for c in resource.checksums if c.type in SUPPORTED_DIGESTS}
    size, actual = digests(path, tuple(expected) or ("sha256",))
    if size != resource.size:
        raise InputError(f"size mismatch for {resource.url}: expected {resource.size} bytes, got {size}")
    for kind, value in expected.items():
        if actual[kind] != value:
            raise InputError(f"{kind} mismatch for {resource.url}: expected {value}, got {actual[kind]}")


def download(resource: DataResource, dest: Path, report: Report | None = None) -> None:
    """Fetch a resource to `dest` (through a ``.part`` file), with a progress bar; retries connection errors.

    `report` hears how far the download got (the heartbeat passes it on as the operation's message).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_exponential_jitter(initial=0.5, max=5),
        retry=tenacity.retry_if_exception_type(httpx.TransportError),
        reraise=True,
    )
    def fetch() -> None:
        with (
            httpx.stream("GET", resource.url, follow_redirects=True, timeout=60) as response,
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
            if response.status_code != 200:
                raise InputUnavailable(f"GET {resource.url} -> {response.status_code}")
            done = 0
            for chunk in response.iter_bytes(CHUNK):
                handle.write(chunk)
                bar.update(len(chunk))
                done += len(chunk)
                if report:
                    report(f"downloading {resource.name}: {done}/{resource.size} bytes")

    try:
        fetch()
    except httpx.HTTPError as exc:
        raise InputUnavailable(f"could not fetch {resource.url}: {exc}") from exc
    os.replace(part, dest)


def fetch_inputs(job: Job, job_dir: Path, report: Report | None = None) -> list[Path]:
    """Every input of the job, downloaded and verified; inputs already here and intact are kept."""
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
        download(resource, path, report)
        try:
            verify(path, resource)
        except InputError:
            # Keep the evidence out of the way of the next attempt.
            os.replace(path, path.with_name(path.name + ".rejected"))
            raise
        paths.append(path)
    return paths
