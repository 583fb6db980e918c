"""The part body reader against gunicorn's own request body classes.

gunicorn's ``wsgi.input`` hands a body over in 1 KiB slices; ``body_blocks``
reads the rest of the body straight from the connection. These tests build
gunicorn's real ``Body``/``LengthReader``/``SocketUnreader`` over a socket
pair, with part of the body (and a pipelined next request) already buffered
by gunicorn, as after it parsed the headers.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from types import SimpleNamespace

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from registry.staging import BLOCK_SIZE, body_blocks


def _gunicorn_request(sock, length: int, buffered: bytes):
    unreader = SocketUnreader(sock)
    unreader.unread(buffered)
    body = Body(LengthReader(unreader, length))
    meta = {"wsgi.input": body, "gunicorn.socket": sock}
    return SimpleNamespace(META=meta, read=body.read), body, unreader


def test_the_body_is_read_from_the_socket_after_what_gunicorn_buffered():
    payload = bytes(range(256)) * (3 * BLOCK_SIZE // 256 + 77)
    server, client = socket.socketpair()
    head, rest = payload[:5000], payload[5000:]
    sender = threading.Thread(target=client.sendall, args=(rest + b"NEXT",))
    sender.start()
    request, body, unreader = _gunicorn_request(server, len(payload), head)

    blocks = list(body_blocks(request, length=len(payload)))
    sender.join()

    joined = b"".join(bytes(b) for b in blocks)
    assert hashlib.sha256(joined).digest() == hashlib.sha256(payload).digest()
    assert max(len(b) for b in blocks) == BLOCK_SIZE  # large blocks, not 1 KiB
    assert body.reader.length == 0  # gunicorn sees the body consumed
    assert unreader.read(4) == b"NEXT"  # the next request is left to gunicorn
    server.close()
    client.close()


def test_a_pipelined_request_in_the_buffer_is_given_back():
    server, client = socket.socketpair()
    request, _, unreader = _gunicorn_request(server, 10, b"0123456789GET /")

    blocks = list(body_blocks(request, length=10))

    assert b"".join(bytes(b) for b in blocks) == b"0123456789"
    assert unreader.read(5) == b"GET /"
    server.close()
    client.close()


def test_a_client_that_stops_early_leaves_the_rest_to_gunicorn():
    server, client = socket.socketpair()
    client.sendall(b"x" * 100)
    client.shutdown(socket.SHUT_WR)
    request, body, _ = _gunicorn_request(server, 1000, b"")

    received = sum(len(b) for b in body_blocks(request, length=1000))

    assert received == 100
    assert body.reader.length == 900
    server.close()
    client.close()
