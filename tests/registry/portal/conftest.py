"""Helpers of the portal page tests: a signed-in client and a query counter."""

from __future__ import annotations

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext


def signed_in(user) -> Client:
    """A test client with ``user``'s session."""
    client = Client()
    client.force_login(user)
    return client


def queries(client, url: str) -> int:
    """The number of queries one GET of ``url`` makes (after a warm-up GET)."""
    assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)
