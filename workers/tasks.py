"""Celery tasks: thin, idempotent, arguments are ids and JSON only.

Each task has an explicit ``name`` so queued messages survive a refactor.
"""

from __future__ import annotations

import os
import socket

import structlog
from celery import shared_task


@shared_task(name="civitas.ping", acks_late=True, ignore_result=False)
def ping() -> dict:
    """Answer with the worker's identity and the request id it inherited.

    Used by the worker round-trip check and by the tests that prove a task
    queued by the web process runs in a separate worker process.
    """
    context = structlog.contextvars.get_contextvars()
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "request_id": context.get("request_id"),
    }
