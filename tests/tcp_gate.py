"""A TCP forwarder in front of a live server that a test can shut and open again: an outage on demand."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Gate:
    """Forwards 127.0.0.1:`port` (its own, free) to 127.0.0.1:`target`; while shut, every connection, open or
    new, is dropped. `patches` holds the times of the `PATCH /operations/...` requests that went through."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.patches: list[float] = []
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="gate", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._open.is_set():
                _drop(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                _drop(client)
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and b"PATCH /operations/" in data:
                    self.patches.append(time.monotonic())
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _drop(sock)

    def shut(self) -> None:
        """Drop every connection, and every new one until `reopen()`."""
        self._open.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _drop(sock)

    def reopen(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.shut()
        self._listener.close()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
