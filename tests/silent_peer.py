"""A TCP peer that accepts connections and never answers.

The fault every timeout in the platform must hold against: the kernel
completes the handshake (the socket listens, so connecting succeeds at
once), then nothing is ever read or written. ``silent_peer()`` yields the
``(host, port)``; the listener stays open until the block ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def silent_peer() -> Iterator[tuple[str, int]]:
    """Listen on 127.0.0.1, accept every connection, and never answer."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        # Accept (so a full backlog never turns the silence into a refusal)
        # and keep each connection open without reading or writing.
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(conn)

    thread = threading.Thread(target=hold, name="silent-peer", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in accepted:
            conn.close()
        listener.close()
