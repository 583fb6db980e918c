"""Reads of webhooks and deliveries, scoped to who may see them; failure counts."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from notifications.models import DeliveryStatus, Webhook, WebhookDelivery


def webhook_list(user) -> QuerySet[Webhook]:
    """The webhooks ``user`` manages: their agency's (maintainers), all (admins)."""
    return Webhook.objects.visible_to(user).select_related("agency")


def delivery_list(user, webhook: Webhook) -> QuerySet[WebhookDelivery]:
    """The delivery log of one webhook the user may see, newest first."""
    return WebhookDelivery.objects.visible_to(user).filter(webhook=webhook)


def webhook_failures() -> dict[str, int]:
    """Failed deliveries (given up after the last attempt) per agency slug.

    For ``/metrics``: a counter labelled by agency; every agency with a
    webhook appears, with 0 when none failed.
    """
    rows = Webhook.objects.values("agency__slug").annotate(
        failed=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.FAILED))
    )
    counts: dict[str, int] = {}
    for row in rows:
        slug = row["agency__slug"]
        counts[slug] = counts.get(slug, 0) + row["failed"]
    return counts
