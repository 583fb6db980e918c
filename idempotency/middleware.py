"""The ``Idempotency-Key`` header on POSTs under /api/ (IETF httpapi draft).

A POST carrying the header is run once per (user, key): a retry with the same
body on the same path gets the stored answer (status, body, ``Location``) with
``Idempotency-Replayed: true``; the same key with another request answers 422
``idempotency_key_reused``; a retry while the first is still running answers
409 ``idempotency_key_in_use``. Answers of 5xx (and streamed ones) are not
kept: the key is released and a retry runs again. Keys expire after
``IDEMPOTENCY_KEY_TTL_HOURS``. Anonymous requests, and bodies larger than
``MAX_BODY`` (streamed uploads, which must not be read into memory), pass
through unchanged.

The API authenticates in the view (DRF), after middleware; to scope a key to
its user before the view runs, this middleware asks DRF's authenticators who
the caller is. A caller they refuse passes through, and the view answers 401.
"""

from __future__ import annotations

import hashlib

from django.http import HttpResponse, JsonResponse
from rest_framework.request import Request
from rest_framework.settings import api_settings

from idempotency import services

HEADER = "HTTP_IDEMPOTENCY_KEY"
MAX_BODY = 1024 * 1024
MAX_KEY = 255


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"code": code, "message": message}, status=status)


def _caller(request):
    """The user DRF's authenticators find on ``request``, or None."""
    drf_request = Request(request)
    for authenticator_class in api_settings.DEFAULT_AUTHENTICATION_CLASSES:
        try:
            found = authenticator_class().authenticate(drf_request)
        except Exception:  # the view will answer with the proper error
            return None
        if found is not None:
            return found[0]
    return None


def _fingerprint(request) -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.path, request.META.get("QUERY_STRING", "")):
        digest.update(part.encode() + b"\0")
    digest.update(request.body)
    return digest.hexdigest()


def _replay(row) -> HttpResponse:
    response = HttpResponse(
        bytes(row.body), status=row.status_code, content_type=row.content_type or None
    )
    if row.location:
        response["Location"] = row.location
    response["Idempotency-Replayed"] = "true"
    return response


class IdempotencyKeyMiddleware:
    """Run a POST sent with an ``Idempotency-Key`` once; replay it to retries."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        key = request.META.get(HEADER)
        is_api_post = request.method == "POST" and request.path.startswith("/api/")
        if key is None or not is_api_post:
            return self.get_response(request)
        key = key.strip().strip('"')
        if not key or len(key) > MAX_KEY:
            return _error(400, "idempotency_key_invalid",
                          f"Idempotency-Key must be 1 to {MAX_KEY} characters.")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = MAX_BODY + 1
        user = _caller(request) if length <= MAX_BODY else None
        if user is None:
            return self.get_response(request)
        claim = services.claim(user=user, key=key, fingerprint=_fingerprint(request))
        if claim.replay is not None:
            return _replay(claim.replay)
        if claim.refusal == "mismatch":
            return _error(422, "idempotency_key_reused",
                          "This Idempotency-Key was used for another request.")
        if claim.refusal == "in_progress":
            return _error(409, "idempotency_key_in_use",
                          "A request with this Idempotency-Key is still being served.")
        try:
            response = self.get_response(request)
        except BaseException:
            services.release(row=claim.row)
            raise
        if response.status_code >= 500 or response.streaming:
            services.release(row=claim.row)
            return response
        services.store(
            row=claim.row, status_code=response.status_code,
            content_type=response.get("Content-Type", ""),
            location=response.get("Location", ""), body=response.content,
        )
        return response
