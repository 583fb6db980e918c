"""Request-scoped middleware of the project."""

from __future__ import annotations

import structlog


class RequestIdHeaderMiddleware:
    """Echo the request id bound by django-structlog as ``X-Request-ID``.

    Clients and support staff can then quote it, and find the request's log
    line and the lines of every task it queued.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            response["X-Request-ID"] = request_id
        return response
