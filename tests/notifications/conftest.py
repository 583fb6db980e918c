"""Webhook receivers started by the tests: real HTTP servers in a thread."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction

from notifications import services
from registry.models import Role
from tests.registry.conftest import *  # noqa: F403  (people and API clients)
from tests.registry.conftest import _person


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint answering from a script: (status, body, headers) each."""

    url: str
    script: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def answer(self, status: int, body: bytes = b"ok", **headers: str) -> None:
        self.script.append((status, body, headers))


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1; answers 200 once its script runs out."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            state.received.append(
                Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
            )
            status, body, headers = (
                state.script.pop(0) if state.script else (200, b"ok", {})
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/civitas"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def local_webhooks(settings):
    """Let webhooks call the test's own http server on 127.0.0.1, at once."""
    settings.CIVITAS_WEBHOOK_ALLOW_HTTP = True
    settings.CIVITAS_WEBHOOK_ALLOW_PRIVATE = True
    settings.CIVITAS_WEBHOOK_BACKOFF_SECONDS = 0
    settings.CIVITAS_WEBHOOK_CONNECT_TIMEOUT_SECONDS = 2
    settings.CIVITAS_WEBHOOK_READ_TIMEOUT_SECONDS = 2
    return settings


@pytest.fixture
def maintainer_b(agency_b):
    return _person("bert", agency_b, Role.MAINTAINER)


def make_webhook(actor, agency, url, event_types, **kwargs):
    """A webhook created through the service; returns (webhook, secret)."""
    with transaction.atomic():
        return services.webhook_create(
            actor=actor, agency=agency, url=url, event_types=event_types, **kwargs
        )


def independent_signature(secret: str, msg_id: str, timestamp: str, body: bytes):
    """The Standard Webhooks v1 signature, computed from the spec by hand."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signatures_valid_for(secret: str, request: Received) -> bool:
    """Whether one of the request's signatures is ``secret``'s (spec check)."""
    expected = independent_signature(
        secret,
        request.headers["webhook-id"],
        request.headers["webhook-timestamp"],
        request.body,
    )
    return any(
        hmac.compare_digest(expected, sig)
        for sig in request.headers["webhook-signature"].split(" ")
    )
