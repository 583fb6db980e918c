"""The silent peer really is silent: a read on it times out, a connect does not."""

from __future__ import annotations

import socket
import time

import pytest

from tests.silent_peer import silent_peer


def test_silent_peer_accepts_and_never_answers():
    with silent_peer() as (host, port):
        started = time.monotonic()
        with socket.create_connection((host, port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            with pytest.raises(TimeoutError):
                conn.recv(1)
        assert 0.9 < time.monotonic() - started < 3
