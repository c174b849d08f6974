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
from nmdc_site.run.egress import Egress, Refused

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
    """An input could not be fetched (no connection, an HTTP error status, a refused address or redirect, no
    access grant): error code UNAVAILABLE."""

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


def download(
    resource: DataResource,
    dest: Path,
    egress: Egress,
    access: Access | None = None,
    report: Report | None = None,
) -> None:
    """Fetch a resource to `dest` (through a ``.part`` file, removed on failure), with a progress bar, by the
    rules of `egress`; retries connection errors. Stops at the declared size: more is DATA_LOSS.

    A resource with `requires_grant` is fetched where `access` says, with the grant it gives (asked for again
    on each try, so a retry never carries an expired one). `report` hears how far the download got.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    name = resource.id

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_exponential_jitter(initial=0.5, max=5),
        retry=tenacity.retry_if_exception_type(httpx.TransportError),
        reraise=True,
    )
    def fetch() -> None:
        url, headers = access(resource) if resource.requires_grant and access else (resource.url, {})
        # identity: the declared size is of the bytes themselves, and a compressed answer could expand past it.
        headers = {**headers, "Accept-Encoding": "identity"}
        with (
            httpx.Client(timeout=60, trust_env=False) as client,
            egress.get(client, url, headers) as response,
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
            done = 0
            for chunk in response.iter_raw(CHUNK):
                done += len(chunk)
                if done > resource.size:
                    raise InputError(
                        f"input {name}: the data site sent more than the declared {resource.size} bytes",
                        f"GET {url}: past the declared {resource.size} bytes; stopped",
                    )
                handle.write(chunk)
                bar.update(len(chunk))
                if report:
                    report(f"downloading {resource.name}: {done}/{resource.size} bytes")

    try:
        fetch()
        os.replace(part, dest)
    except Refused as exc:
        raise InputUnavailable(
            f"input {name} could not be fetched: the download was refused (an address that is not public, "
            "or a redirect the agent does not follow)",
            f"{resource.url}: {exc}",
        ) from exc
    except httpx.HTTPError as exc:
        raise InputUnavailable(
            f"input {name} could not be fetched: no answer from its data site",
            f"{resource.url}: {type(exc).__name__}: {exc}",
        ) from exc
    finally:
        part.unlink(missing_ok=True)  # what a failed try left; nothing after a success


def fetch_inputs(
    job: Job, job_dir: Path, egress: Egress, access: Access | None = None, report: Report | None = None
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
        download(resource, path, egress, access, report)
        try:
            verify(path, resource)
        except InputError:
            # Keep the evidence out of the way of the next attempt.
            os.replace(path, path.with_name(path.name + ".rejected"))
            raise
        paths.append(path)
    return paths
