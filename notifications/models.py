"""Webhooks of agencies and the log of their deliveries.

Written only by ``notifications.services``. A webhook's secrets are stored
encrypted (``notifications.signing``) and never read back through the API:
the plain secret is shown once, when it is created or rotated.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from registry.models import Role, user_agency_id, user_role


class WebhookQuerySet(models.QuerySet):
    def visible_to(self, user) -> WebhookQuerySet:
        """Platform administrators see every webhook; maintainers their agency's."""
        role = user_role(user)
        if role == Role.ADMIN:
            return self
        if role == Role.MAINTAINER:
            return self.filter(agency_id=user_agency_id(user))
        return self.none()


class Webhook(models.Model):
    """An agency's HTTP endpoint that receives the events it subscribed to.

    Invariants: ``event_types`` is a non-empty subset of
    ``notifications.events.EVENT_TYPES``; ``url`` is https unless
    ``CIVITAS_WEBHOOK_ALLOW_HTTP``; ``previous_secret_encrypted`` is set only
    until ``previous_secret_expires_at`` (the grace period of a rotation).
    """

    agency = models.ForeignKey(
        "registry.Agency", on_delete=models.PROTECT, related_name="webhooks"
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list)
    is_enabled = models.BooleanField(default=True)
    secret_encrypted = models.TextField(editable=False)
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WebhookQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"webhook {self.pk} of {self.agency_id}: {self.url}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Waiting for its next attempt"
    SENDING = "sending", "An attempt is under way"
    DELIVERED = "delivered", "Delivered (2xx)"
    FAILED = "failed", "Given up after the last attempt"


class WebhookDeliveryQuerySet(models.QuerySet):
    def visible_to(self, user) -> WebhookDeliveryQuerySet:
        """The deliveries of the webhooks the user may see."""
        return self.filter(webhook__in=Webhook.objects.visible_to(user))


class WebhookDelivery(models.Model):
    """One event (or ping) to send to one webhook, and what its attempts got.

    ``event_id`` is the ``webhook-id`` header, the same on every attempt so
    that the receiver can drop duplicates; (webhook, event_id) is unique, so
    announcing an event twice never sends it twice. ``status_codes`` holds
    one entry per attempt (the HTTP status, or None when no response came).
    """

    webhook = models.ForeignKey(
        Webhook, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=100)
    audit_seq = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField()
    status = models.CharField(
        max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    status_codes = models.JSONField(default=list)
    last_error = models.CharField(max_length=300, blank=True)
    response_excerpt = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["webhook", "event_id"], name="webhook_delivery_once"
            )
        ]
        indexes = [
            models.Index(
                fields=["status", "next_attempt_at"], name="webhook_delivery_due"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> webhook {self.webhook_id}"


class NotificationEmail(models.Model):
    """The e-mail sent about one audit event: written once, so it is sent once."""

    audit_seq = models.BigIntegerField(unique=True)
    event_type = models.CharField(max_length=100)
    recipients = models.JSONField(default=list)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-audit_seq"]

    def __str__(self) -> str:
        return f"e-mail about audit event {self.audit_seq}"
