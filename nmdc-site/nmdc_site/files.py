"""Local files: hashing, URLs, and a small threaded HTTP server that serves a folder read-only.

Nothing here follows a symbolic link: a link in a served or published folder could lead anywhere on the host.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from email.message import Message
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

from nmdc_site.grants import GrantRefused

log = logging.getLogger("nmdc_site.files")

CHUNK = 1024 * 1024
# Names a writer uses while a file is incomplete; never served or registered.
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial")


def is_hidden(relpath: Path) -> bool:
    """Hidden (a dot-name anywhere in the path) or still being written: not published."""
    return any(part.startswith(".") for part in relpath.parts) or relpath.name.endswith(PARTIAL_SUFFIXES)


def published_files(root: Path) -> Iterator[Path]:
    """The files under `root` that are published, as paths relative to it, in a stable order.

    Symbolic links are never published, nor followed into folders: a link could lead anywhere on this host.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (base / d).is_symlink())
        for name in sorted(filenames):
            rel = (base / name).relative_to(root)
            if not is_hidden(rel) and _regular_file(root / rel):
                yield rel


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def open_beneath(root: Path, relpath: Path) -> BinaryIO:
    """The regular file `relpath` under `root`, open for reading, reached without following a symbolic link.

    Each folder on the way and the file itself are opened with O_NOFOLLOW, each relative to the one before, so
    a link (or a folder swapped for a link after a scan) fails with OSError instead of leading elsewhere.
    """
    parts = relpath.parts
    if not parts or any(part in ("", ".", "..") for part in parts):
        raise FileNotFoundError(errno.ENOENT, "not a path under the folder", str(relpath))
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(relpath))
    return os.fdopen(fd, "rb")


def digests(
    path: Path, kinds: tuple[str, ...] = ("sha256",), *, root: Path | None = None
) -> tuple[int, dict[str, str]]:
    """Size in bytes and hex digests of a file, read once. With `root`, `path` is relative to it and opened
    with `open_beneath` (for files others put there: published files, a command's outputs)."""
    hashers = {kind: hashlib.new(kind) for kind in kinds}
    size = 0
    with open_beneath(root, path) if root is not None else path.open("rb") as handle:
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


Guard = Callable[[Path, Message], None]
"""Decides whether a request for a file (its path under the folder, the request's headers) may be served:
returns to let it through, raises GrantRefused to refuse it."""


def request_path(target: str) -> Path | None:
    """The file a request target names, relative to the served folder; None for a folder, a hidden or
    partial name, `.` or `..` (such paths name nothing that is served)."""
    raw = unquote(urlsplit(target).path)
    if "\x00" in raw or raw.endswith("/"):
        return None
    parts = [part for part in raw.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        return None
    rel = Path(*parts)
    return None if is_hidden(rel) else rel


class _Handler(SimpleHTTPRequestHandler):
    """Published files only, reached without following symbolic links: no folder listings, nothing hidden or
    partial; each request first passes the server's guard, if it has one. Logs to `logging`."""

    server: _Server

    def send_head(self):
        rel = request_path(self.path)
        guard = self.server.guard
        if guard is not None:
            # Before looking at the file: without a grant, nothing is learnt, not even whether it exists.
            try:
                guard(rel or Path(), self.headers)
            except GrantRefused as exc:
                self._refuse(exc)
                return None
        try:
            handle = open_beneath(Path(self.directory), rel) if rel is not None else None
        except OSError:
            handle = None
        if handle is None:
            self.send_error(404, "File not found")
            return None
        try:
            info = os.fstat(handle.fileno())
            self.send_response(200)
            self.send_header("Content-Type", self.guess_type(rel.name))
            self.send_header("Content-Length", str(info.st_size))
            self.send_header("Last-Modified", self.date_time_string(info.st_mtime))
            self.end_headers()
        except BaseException:
            handle.close()
            raise
        return handle

    def _refuse(self, exc: GrantRefused) -> None:
        body = json.dumps({"detail": exc.reason}).encode()
        self.send_response(exc.status)
        if exc.status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="nmdc-site"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    guard: Guard | None = None


class FileServer:
    """Serves `root` read-only over HTTP from a background thread until `stop()`; with a `guard`, only the
    requests it lets through."""

    def __init__(
        self, root: Path, host: str = "127.0.0.1", port: int = 0, guard: Guard | None = None
    ) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        handler = partial(_Handler, directory=str(self.root))
        _Server.allow_reuse_address = True
        try:
            self._server = _Server((host, port), handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve files on {host}:{port}: {exc.strerror}") from exc
        self._server.daemon_threads = True
        self._server.guard = guard
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
