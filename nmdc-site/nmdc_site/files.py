"""Local files: hashing, URLs, and a small threaded HTTP server that serves a folder read-only."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger("nmdc_site.files")

CHUNK = 1024 * 1024
# Names a writer uses while a file is incomplete; never served or registered.
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial")


def is_hidden(relpath: Path) -> bool:
    """Hidden (a dot-name anywhere in the path) or still being written: not published."""
    return any(part.startswith(".") for part in relpath.parts) or relpath.name.endswith(PARTIAL_SUFFIXES)


def published_files(root: Path) -> Iterator[Path]:
    """The files under `root` that are published, as paths relative to it, in a stable order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(root)
            if not is_hidden(rel) and (root / rel).is_file():
                yield rel


def digests(path: Path, kinds: tuple[str, ...] = ("sha256",)) -> tuple[int, dict[str, str]]:
    """Size in bytes and hex digests of a file, read once."""
    hashers = {kind: hashlib.new(kind) for kind in kinds}
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            for hasher in hashers.values():
                hasher.update(chunk)
    return size, {kind: hasher.hexdigest() for kind, hasher in hashers.items()}


def file_url(public_url: str, relpath: Path) -> str:
    """The URL of a published file under `public_url`."""
    return public_url.rstrip("/") + "/" + quote(relpath.as_posix())


def default_public_url(bind: str, port: int) -> str:
    """`http://host:port` for a bind address; a wildcard bind is advertised under this host's name."""
    host = socket.getfqdn() if bind in ("0.0.0.0", "::", "") else bind
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _Handler(SimpleHTTPRequestHandler):
    """Files only: no directory listings, nothing hidden or partial, logs to `logging`."""

    def send_head(self):
        rel = Path(unquote(urlsplit(self.path).path).lstrip("/"))
        if not rel.parts or is_hidden(rel) or Path(self.translate_path(self.path)).is_dir():
            self.send_error(404, "File not found")
            return None
        return super().send_head()

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class FileServer:
    """Serves `root` read-only over HTTP from a background thread until `stop()`."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        handler = partial(_Handler, directory=str(self.root))
        ThreadingHTTPServer.allow_reuse_address = True
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve files on {host}:{port}: {exc.strerror}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="file-server", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 asked for any free one)."""
        return self._server.server_address[1]

    def start(self) -> FileServer:
        self._thread.start()
        log.info("serving %s on %s:%s", self.root, *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
