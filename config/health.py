"""``GET /healthz``: the state of the database, the broker and what apps add.

Answers 200 when every part responds and 503 naming the parts that do not.
Error details are reduced to the exception class so that connection strings
and hostnames never reach an unauthenticated caller. ``config`` imports no
app: an app adds its own part (governance: the MLflow store) with
``register`` in its ``AppConfig.ready``.

The checks run concurrently, each in a thread of its own, against one
deadline (``HEALTHCHECK_TIMEOUT_SECONDS``): the answer never waits longer,
whatever a peer does. A part that has not answered by then is reported down
(``timeout``). Each check is itself bounded (socket timeouts, the database's
``connect_timeout`` and a watchdog that shuts the socket of a query that
outlives the budget), so its thread ends soon after; while one is still
running, a new probe reports that part down (``busy``) instead of starting a
second thread, so probes against a silent peer can never pile threads up.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection


def _shut_socket(fileno: int) -> None:
    """Shut a socket down by descriptor: a blocked read on it returns at once.

    ``shutdown`` acts on the socket, not the descriptor, so shutting a
    duplicate wakes the thread waiting in the driver (which then raises and
    closes its own descriptor); closing ours leaves theirs valid.
    """
    try:
        sock = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def check_database(alias: str = "default") -> None:
    """Run ``SELECT 1`` on a new connection to ``alias``, bounded in time.

    Opening the connection is bounded by ``connect_timeout`` (the health
    budget, rounded up; at least 2 s); a peer that then stops answering
    (during the connection's set-up queries or the ``SELECT 1``) has its
    socket shut down by a watchdog once the health budget is spent, which
    ends the wait at once.
    """
    budget = settings.HEALTHCHECK_TIMEOUT_SECONDS
    conn = connections.create_connection(alias)
    if conn.vendor == "postgresql":
        # Connecting gets the health budget too (libpq counts whole seconds,
        # two at least), so the thread ends about when the answer is given.
        options = {**conn.settings_dict.get("OPTIONS", {}),
                   "connect_timeout": max(2, math.ceil(budget))}
        conn.settings_dict = {**conn.settings_dict, "OPTIONS": options}
    watchdog = threading.Timer(budget, _cut, args=(conn,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.ensure_connection()
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        watchdog.cancel()
        conn.close()


def _cut(conn) -> None:
    """Shut the socket of ``conn`` if it has one (PostgreSQL)."""
    raw = conn.connection
    pgconn = getattr(raw, "pgconn", None)
    if pgconn is not None:
        try:
            fileno = pgconn.socket
        except Exception:  # already closed
            return
        _shut_socket(fileno)


def check_broker() -> None:
    """Open a connection to the Celery broker and ask it something, bounded."""
    timeout = settings.HEALTHCHECK_TIMEOUT_SECONDS
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    with Connection(
        settings.CELERY_BROKER_URL, connect_timeout=timeout, transport_options=options
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
}

# Names of the checks whose thread is still running (see the module docstring).
_RUNNING: set[str] = set()
_RUNNING_LOCK = threading.Lock()


def register(name: str, check: Callable[[], None]) -> None:
    """Add a part to ``/healthz``: ``check`` raises when the part is down.

    Called from an app's ``AppConfig.ready``; registering a name again
    replaces its check, so a reloaded app does not report a part twice.
    The check must bound its own outbound calls (socket timeouts); the
    answer does not wait for it past ``HEALTHCHECK_TIMEOUT_SECONDS``.
    """
    CHECKS[name] = check


class _Probe(threading.Thread):
    """One check in a daemon thread: its outcome, or nothing before the deadline."""

    def __init__(self, name: str, check: Callable[[], None]) -> None:
        super().__init__(name=f"civitas-health-{name}", daemon=True)
        self.part = name
        self.check = check
        self.error: str | None = None
        self.ms: float | None = None

    def run(self) -> None:
        started = time.perf_counter()
        try:
            self.check()
        except Exception as exc:  # a health check must report, never raise
            self.error = type(exc).__name__
        finally:
            self.ms = round((time.perf_counter() - started) * 1000, 1)
            with _RUNNING_LOCK:
                _RUNNING.discard(self.part)


def run_checks(timeout: float) -> dict[str, dict]:
    """Run every check concurrently; report each part within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    parts: dict[str, dict] = {}
    probes: list[_Probe] = []
    for name, check in list(CHECKS.items()):
        with _RUNNING_LOCK:
            if name in _RUNNING:
                parts[name] = {"ok": False, "error": "busy", "ms": 0.0}
                continue
            _RUNNING.add(name)
        probe = _Probe(name, check)
        try:
            probe.start()
        except RuntimeError:  # no thread to be had: report, never raise
            with _RUNNING_LOCK:
                _RUNNING.discard(name)
            parts[name] = {"ok": False, "error": "busy", "ms": 0.0}
            continue
        probes.append(probe)
    for probe in probes:
        probe.join(max(0.0, deadline - time.monotonic()))
        if probe.is_alive() or probe.ms is None:
            parts[probe.part] = {"ok": False, "error": "timeout",
                                 "ms": round(timeout * 1000, 1)}
        elif probe.error:
            parts[probe.part] = {"ok": False, "error": probe.error, "ms": probe.ms}
        else:
            parts[probe.part] = {"ok": True, "ms": probe.ms}
    return {name: parts[name] for name in CHECKS if name in parts}


@never_cache
@require_GET
def healthz(request):
    """Run every check and report each part's state and latency."""
    parts = run_checks(settings.HEALTHCHECK_TIMEOUT_SECONDS)
    down = [name for name, part in parts.items() if not part["ok"]]
    body = {"status": "down" if down else "ok", "down": down, "checks": parts}
    return JsonResponse(body, status=503 if down else 200)
