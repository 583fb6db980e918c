"""Security events: denied requests, kept apart from the hash chain.

Probes cannot grow the chain: each caller's events are rate-limited per minute
in Django's cache, and what is dropped is counted on the caller's next event.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.utils import timezone

from audit.models import SecurityEvent
from audit.services import actor_label_of

logger = logging.getLogger(__name__)

def _caller_key(actor: AbstractBaseUser) -> str:
    return f"audit:security:{actor.pk}"


def _count_in_minute(actor: AbstractBaseUser) -> int:
    """How many denials of ``actor`` this minute, this one included."""
    key = f"{_caller_key(actor)}:{int(timezone.now().timestamp() // 60)}"
    cache.add(key, 0, timeout=120)
    try:
        return cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=120)
        return 1


def security_event_record(
    *,
    actor: AbstractBaseUser,
    method: str,
    path: str,
    status_code: int,
    object_type: str = "",
    object_id: str = "",
    agency_id: int | None = None,
    agency_slug: str = "",
    action: str = "authz.denied",
) -> SecurityEvent | None:
    """Record one denied request as a security event, unless the caller's rate is spent.

    Kept apart from the hash chain, so probes cannot grow it. At most
    ``AUDIT_SECURITY_EVENTS_PER_MINUTE`` events per caller and minute (counted
    in Django's cache); the ones over the limit are dropped and counted, and
    the caller's next recorded event carries that count as ``suppressed``.
    Returns the event, or None when it was dropped. Raises ValueError for an
    anonymous or unsaved actor.
    """
    actor_label = actor_label_of(actor)
    dropped_key = f"{_caller_key(actor)}:dropped"
    count = _count_in_minute(actor)
    limit = settings.AUDIT_SECURITY_EVENTS_PER_MINUTE
    if count > limit:
        if cache.add(dropped_key, 1, timeout=None) is False:
            cache.incr(dropped_key)
        if count == limit + 1:
            logger.warning(
                "security events of %s over %d a minute: dropping and counting",
                actor_label,
                limit,
            )
        return None
    suppressed = cache.get(dropped_key) or 0
    if suppressed:
        cache.decr(dropped_key, suppressed)
    return SecurityEvent.objects.create(
        created_at=timezone.now(),
        action=action,
        actor=actor,
        actor_label=actor_label,
        agency_id=agency_id,
        agency_slug=agency_slug[:80],
        method=method[:10],
        path=path[:500],
        status_code=status_code,
        object_type=object_type[:100],
        object_id=str(object_id)[:100],
        suppressed=suppressed,
    )
