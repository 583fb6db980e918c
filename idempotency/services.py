"""Claiming an Idempotency-Key, storing its answer, and forgetting expired ones.

Infrastructure state, not governed records: nothing here is audited (the
request a key protects records its own audit event, once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from idempotency.models import IdempotencyKey


@dataclass(frozen=True)
class Claim:
    """The outcome of ``claim``: run the request (``row``), or replay/refuse."""

    row: IdempotencyKey | None = None
    replay: IdempotencyKey | None = None
    refusal: str | None = None  # "in_progress" or "mismatch"


def claim(*, user, key: str, fingerprint: str) -> Claim:
    """Take ``key`` for ``user``: a new row to run under, or what to answer instead.

    The insert commits at once, so of two concurrent duplicates exactly one
    inserts; the other finds the row and answers ``in_progress``.
    """
    now = timezone.now()
    expires = now + timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    for _ in range(2):
        try:
            with transaction.atomic():
                row = IdempotencyKey.objects.create(
                    user=user, key=key, fingerprint=fingerprint, expires_at=expires
                )
            return Claim(row=row)
        except IntegrityError:
            existing = IdempotencyKey.objects.filter(user=user, key=key).first()
        if existing is None:
            continue  # removed between the insert and the read: try again
        if existing.expires_at <= now:
            IdempotencyKey.objects.filter(pk=existing.pk, expires_at__lte=now).delete()
            continue
        if existing.fingerprint != fingerprint:
            return Claim(refusal="mismatch")
        if existing.status_code is None:
            return Claim(refusal="in_progress")
        return Claim(replay=existing)
    return Claim(refusal="in_progress")


def store(*, row: IdempotencyKey, status_code: int, content_type: str,
          location: str, body: bytes) -> None:
    """Keep the answer a claimed request gave, for its retries to replay."""
    IdempotencyKey.objects.filter(pk=row.pk).update(
        status_code=status_code, content_type=content_type[:255],
        location=location[:2048], body=body,
    )


def release(*, row: IdempotencyKey) -> None:
    """Forget a claim whose request did not complete: a retry may run it.

    The request may have failed because its database connection dropped: a
    connection left unusable is closed first, so the delete opens a new one.
    """
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()
    IdempotencyKey.objects.filter(pk=row.pk, status_code__isnull=True).delete()


def purge_expired() -> int:
    """Delete expired keys; returns how many."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
