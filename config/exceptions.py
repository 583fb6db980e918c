"""Domain errors and the one API exception handler that maps them to HTTP.

Every API error body has the same shape::

    {"code": "<machine-readable>", "message": "<sentence>", "fields": {...}}

``fields`` maps a field name to a list of ``{"code", "message"}`` objects and
is present for validation errors only.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

# Seconds a client is asked to wait before retrying after a 503.
DATABASE_RETRY_AFTER = 5


class ApiErrorSerializer(serializers.Serializer):
    """The one error shape of the API, as the OpenAPI schema documents it."""

    code = serializers.CharField(help_text="Machine-readable, e.g. validation_error")
    message = serializers.CharField(help_text="One sentence for a person")
    fields = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="For validation errors: field name to a list of {code, message}",
    )


class DomainError(Exception):
    """A business rule refused the request: 400 unless a subclass says otherwise."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "domain_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.fields = fields


class InvalidTransition(DomainError):
    """A lifecycle transition that the state machine does not allow (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "invalid_transition"


class Conflict(DomainError):
    """The request conflicts with the current state of the resource (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class PolicyViolation(DomainError):
    """A governance rule (separation of duties, policy) forbids the action (403)."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "policy_violation"


class PayloadTooLarge(DomainError):
    """The uploaded body exceeds the configured cap (413)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


def _field_errors(detail: Any) -> dict[str, Any]:
    """Turn DRF's nested ErrorDetail structure into ``{field: [{code, message}]}``."""
    if isinstance(detail, dict):
        return {key: _field_errors(value) for key, value in detail.items()}
    if isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail) for item in detail):
            return [{"code": item.code, "message": str(item)} for item in detail]
        return [_field_errors(item) for item in detail]
    if isinstance(detail, exceptions.ErrorDetail):
        return [{"code": detail.code, "message": str(detail)}]
    return detail


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Render domain and DRF errors in the one JSON shape of the API."""
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.fields:
            body["fields"] = exc.fields
        return Response(body, status=exc.status_code)
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database went away mid-request (connection dropped, server
        # restarting): the transaction rolled back, nothing was written.
        set_rollback()
        response = Response(
            {
                "code": "database_unavailable",
                "message": "The database is unavailable; nothing was changed. "
                "Try again shortly.",
            },
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = str(DATABASE_RETRY_AFTER)
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _field_errors(exc.detail)
        if not isinstance(fields, dict):
            # A ValidationError raised with a list names no field: the
            # documented shape keeps ``fields`` an object all the same.
            fields = {"non_field_errors": fields}
        response.data = {
            "code": "validation_error",
            "message": "The request has invalid fields.",
            "fields": fields,
        }
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        is_detail = isinstance(detail, exceptions.ErrorDetail)
        code = detail.code if is_detail else exc.default_code
        response.data = {"code": code, "message": str(detail)}
    return response
