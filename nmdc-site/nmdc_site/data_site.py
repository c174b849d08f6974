"""`nmdc-site serve`: a data site. Serve a folder over HTTP and register each file once as a data resource.

Registering nothing twice, across restarts, rests on two things (no local state file is needed):

1. Before registering, the site's existing data resources are listed (`GET /data_resources?site_id=...`); a
   file whose URL and sha256 are already registered is skipped.
2. Each registration carries a deterministic `Idempotency-Key` derived from the URL, size, sha256 and data
   type, so even two `serve` processes racing on the same folder, or a retry after a lost answer, create one
   resource.

A file whose content changes gets a new checksum and is registered again (it is a new resource). A file that
moves to another URL (another `--public-url` or path) is registered under its new URL.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nmdc_site.client import DataResource, NmdcClient
from nmdc_site.files import digests, file_url, published_files

log = logging.getLogger("nmdc_site.serve")


def registration_key(*, url: str, size: int, sha256: str, data_type: str) -> str:
    """The Idempotency-Key of one file's registration: the same file at the same URL gives the same key."""
    material = "\n".join([url, str(size), sha256, data_type]).encode()
    return "nmdc-site-serve:" + hashlib.sha256(material).hexdigest()


@dataclass
class DataSite:
    """Registers the published files of `root`, reachable under `public_url`, as data resources of the site."""

    api: NmdcClient
    root: Path
    public_url: str
    data_type: str
    site_id: str
    description: str | None = None
    on_register: Callable[[DataResource], None] = lambda resource: None
    # (url, sha256) pairs the site has registered already.
    _known: set[tuple[str, str]] = field(default_factory=set)
    # relpath -> (mtime_ns, size, sha256): files are re-hashed only when they change.
    _hashes: dict[Path, tuple[int, int, str]] = field(default_factory=dict)

    def load_known(self) -> int:
        """Read what the site has registered already; returns how many resources it has."""
        count = 0
        for resource in self.api.list_data_resources(site_id=self.site_id, page_size=1000):
            count += 1
            sha = resource.checksum("sha256")
            if sha:
                self._known.add((resource.url, sha))
        return count

    def _hash(self, rel: Path) -> tuple[int, str]:
        path = self.root / rel
        stat = path.stat()
        cached = self._hashes.get(rel)
        if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
            return cached[1], cached[2]
        size, sums = digests(path)
        self._hashes[rel] = (stat.st_mtime_ns, size, sums["sha256"])
        return size, sums["sha256"]

    def sync(self) -> list[DataResource]:
        """Register every published file not registered yet; returns the new data resources."""
        created = []
        for rel in published_files(self.root):
            try:
                size, sha = self._hash(rel)
            except FileNotFoundError:
                continue  # removed while we scanned
            url = file_url(self.public_url, rel)
            if (url, sha) in self._known:
                continue
            resource = self.api.create_data_resource(
                name=rel.as_posix(),
                url=url,
                data_type=self.data_type,
                size=size,
                checksums=[{"type": "sha256", "checksum": sha}],
                description=self.description,
                idempotency_key=registration_key(url=url, size=size, sha256=sha, data_type=self.data_type),
            )
            self._known.add((url, sha))
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
