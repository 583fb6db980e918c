"""Denied requests under /api/v1/, recorded in one place as security events.

A request answered 403 is a denial. A request answered 404 is one when its
route names an object (the first URL argument, ``AUDIT_DENIAL_ROUTES`` says
of which model) that exists but is not among those the caller may read: an
attempt on another agency's object, which the API answers exactly like a
missing one. A 404 for an object that does not exist, or for a missing part
of a visible one (a version with no artifact yet), records nothing.

Each denial becomes an ``authz.denied`` ``SecurityEvent`` (not a link of the
hash chain), rate-limited per caller by ``audit.security``. Recording never
changes the answer: a failure to record is logged and the response goes out.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError

from audit import security

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1/"
DENIED_STATUSES = frozenset({403, 404})


class SecurityEventMiddleware:
    """Record every denied request under /api/v1/ as ``authz.denied``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code in DENIED_STATUSES and request.path.startswith(
            API_PREFIX
        ):
            try:
                record_denial(request, response.status_code)
            except Exception:  # the answer is made; a failed record must not change it
                logger.exception("could not record a denied request")
        return response


def record_denial(request, status_code: int):
    """Record the request as a security event if it was a denial; the event or None."""
    user = getattr(request, "user", None)
    match = getattr(request, "resolver_match", None)
    if user is None or not user.is_authenticated or match is None:
        return None
    target = denied_object(request, match)
    if status_code == 404 and (target is None or target["visible"]):
        return None
    target = target or {}
    return security.security_event_record(
        actor=user,
        method=request.method,
        path=request.path,
        status_code=status_code,
        object_type=target.get("object_type", ""),
        object_id=target.get("object_id", ""),
        agency_id=target.get("agency_id"),
        agency_slug=target.get("agency_slug", ""),
    )


def denied_object(request, match) -> dict[str, Any] | None:
    """The existing object the route names, whether the caller sees it, its agency.

    None when the route names no object of ``AUDIT_DENIAL_ROUTES`` or the
    object does not exist.
    """
    segment = request.path[len(API_PREFIX) :].split("/", 1)[0]
    route = settings.AUDIT_DENIAL_ROUTES.get(segment)
    if route is None or not match.kwargs:
        return None
    value = next(iter(match.kwargs.values()))
    model = apps.get_model(route["model"])
    try:
        rows = model._default_manager.filter(**{route["lookup"]: value})
        found = _owner(rows, route["agency"])
    except (TypeError, ValueError, ValidationError):
        return None
    if found is None:
        return None
    visible_model, visible_lookup = route["visible"]
    visible = (
        apps.get_model(visible_model)
        ._default_manager.visible_to(request.user)
        .filter(**{visible_lookup: value})
        .exists()
    )
    return {
        "object_type": model._meta.label_lower,
        "object_id": str(value),
        "agency_id": found[0],
        "agency_slug": found[1] or "",
        "visible": visible,
    }


def _owner(rows, paths: list[str]) -> tuple[int | None, str | None] | None:
    """(agency id, slug) of the first row's owner along ``paths``; None if no row."""
    owner: tuple[int | None, str | None] | None = None
    for path in paths:
        fields = ("pk", "slug") if path == "" else (f"{path}__pk", f"{path}__slug")
        row = rows.values_list(*fields).first()
        if row is None:
            return None
        owner = row
        if row[0] is not None:
            break
    return owner
