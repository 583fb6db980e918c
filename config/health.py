"""``GET /healthz``: the state of the database, the broker and what apps add.

Answers 200 when every part responds and 503 naming the parts that do not.
Error details are reduced to the exception class so that connection strings
and hostnames never reach an unauthenticated caller. ``config`` imports no
app: an app adds its own part (governance: the MLflow store) with
``register`` in its ``AppConfig.ready``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection


def check_database() -> None:
    """Run ``SELECT 1`` on the default database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    """Open and close a connection to the Celery broker, failing fast."""
    timeout = settings.HEALTHCHECK_TIMEOUT_SECONDS
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
}


def register(name: str, check: Callable[[], None]) -> None:
    """Add a part to ``/healthz``: ``check`` raises when the part is down.

    Called from an app's ``AppConfig.ready``; registering a name again
    replaces its check, so a reloaded app does not report a part twice.
    """
    CHECKS[name] = check


@never_cache
@require_GET
def healthz(request):
    """Run every check and report each part's state and latency."""
    parts: dict[str, dict] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # a health check must report, never raise
            parts[name] = {"ok": False, "error": type(exc).__name__}
        else:
            parts[name] = {"ok": True}
        parts[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    down = [name for name, part in parts.items() if not part["ok"]]
    body = {"status": "down" if down else "ok", "down": down, "checks": parts}
    return JsonResponse(body, status=503 if down else 200)
