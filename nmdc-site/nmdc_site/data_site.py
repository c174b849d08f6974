"""`nmdc-site serve`: a data site. Serve a folder over HTTP and register each file once as a data resource.

Registering nothing twice, across restarts, rests on two things (no local state file is needed):

1. Before registering, the site's existing data resources are listed (`GET /data_resources?site_id=...`); a
   file whose URL and sha256 are already registered is skipped.
2. Each registration carries a deterministic `Idempotency-Key` derived from the URL, size, sha256 and data
   type, so even two `serve` processes racing on the same folder, or a retry after a lost answer, create one
   resource.

A file whose content changes gets a new checksum and is registered again (it is a new resource). A file that
moves to another URL (another `--public-url` or path) is registered under its new URL, and a file registered
open is registered again when the site starts requiring grants (`--require-grant`), and the other way round;
likewise when the site gives its files another group (`--group`).

With `--require-grant` the files are registered with `requires_grant: true` and served only to requests that
carry a valid access grant for a data resource registered at the file's URL (`GrantGate`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from nmdc_site.client import DataResource, NmdcClient
from nmdc_site.files import digests, file_url, published_files
from nmdc_site.grants import GrantVerifier

log = logging.getLogger("nmdc_site.serve")


def registration_key(
    *,
    url: str,
    size: int,
    sha256: str,
    data_type: str,
    requires_grant: bool = False,
    group: str | None = None,
) -> str:
    """The Idempotency-Key of one file's registration: the same file at the same URL gives the same key."""
    fields = [url, str(size), sha256, data_type] + (["requires_grant"] if requires_grant else [])
    if group is not None:
        fields.append(f"group={group}")
    material = "\n".join(fields).encode()
    return "nmdc-site-serve:" + hashlib.sha256(material).hexdigest()


class GrantGate:
    """`serve --require-grant`: a request passes only with a valid grant for a data resource this site
    registered at the requested file's URL (`FileServer`'s guard)."""

    def __init__(self, verifier: GrantVerifier) -> None:
        self.verifier = verifier
        self.public_url: str | None = None
        """The base of the registered URLs; until it is set, every request is refused."""
        self._ids_by_url: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def admit(self, resource: DataResource) -> None:
        """Grants for `resource` open its URL from now on."""
        with self._lock:
            self._ids_by_url.setdefault(resource.url, set()).add(resource.id)

    def __call__(self, relpath: Path, headers: Message) -> None:
        url = file_url(self.public_url, relpath) if self.public_url and relpath.parts else None
        with self._lock:
            ids = frozenset(self._ids_by_url.get(url, ())) if url else frozenset()
        self.verifier.check(headers.get("Authorization"), ids)


@dataclass
class DataSite:
    """Registers the published files of `root`, reachable under `public_url`, as data resources of the site."""

    api: NmdcClient
    root: Path
    public_url: str
    data_type: str
    site_id: str
    description: str | None = None
    requires_grant: bool = False
    group: str | None = None
    """The group (sample, data generation) of every file registered."""
    gate: GrantGate | None = None
    on_register: Callable[[DataResource], None] = lambda resource: None
    # (url, sha256, requires_grant, group) of what the site has registered already.
    _known: set[tuple[str, str, bool, str | None]] = field(default_factory=set)
    # relpath -> (mtime_ns, size, sha256): files are re-hashed only when they change.
    _hashes: dict[Path, tuple[int, int, str]] = field(default_factory=dict)

    def load_known(self) -> int:
        """Read what the site has registered already; returns how many resources it has."""
        count = 0
        for resource in self.api.list_data_resources(site_id=self.site_id, page_size=1000):
            count += 1
            sha = resource.checksum("sha256")
            if sha:
                self._known.add((resource.url, sha, resource.requires_grant, resource.group))
            if self.gate is not None:
                self.gate.admit(resource)
        return count

    def _hash(self, rel: Path) -> tuple[int, str]:
        stat = (self.root / rel).lstat()
        cached = self._hashes.get(rel)
        if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
            return cached[1], cached[2]
        size, sums = digests(rel, root=self.root)
        self._hashes[rel] = (stat.st_mtime_ns, size, sums["sha256"])
        return size, sums["sha256"]

    def sync(self) -> list[DataResource]:
        """Register every published file not registered yet; returns the new data resources."""
        created = []
        for rel in published_files(self.root):
            try:
                size, sha = self._hash(rel)
            except OSError:
                continue  # removed, or swapped for a link, while we scanned
            url = file_url(self.public_url, rel)
            if (url, sha, self.requires_grant, self.group) in self._known:
                continue
            resource = self.api.create_data_resource(
                name=rel.as_posix(),
                url=url,
                data_type=self.data_type,
                size=size,
                checksums=[{"type": "sha256", "checksum": sha}],
                description=self.description,
                requires_grant=self.requires_grant,
                group=self.group,
                idempotency_key=registration_key(
                    url=url,
                    size=size,
                    sha256=sha,
                    data_type=self.data_type,
                    requires_grant=self.requires_grant,
                    group=self.group,
                ),
            )
            if self.gate is not None:
                self.gate.admit(resource)
            self._known.add((url, sha, self.requires_grant, self.group))
            log.info("registered %s as %s", rel, resource.id)
            self.on_register(resource)
            created.append(resource)
        return created

    def run(self, rescan_seconds: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Sync now, then every `rescan_seconds` (0: only now) until `stop()`; serving goes on meanwhile."""
        self.sync()
        while not stop():
            time.sleep(rescan_seconds if rescan_seconds > 0 else 1.0)
            if rescan_seconds > 0 and not stop():
                try:
                    self.sync()
                except Exception as exc:
                    # The API may be down for a while; the files stay served and the next scan tries again.
                    log.warning("rescan failed: %s", exc)
