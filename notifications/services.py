"""Governed writes of webhooks, and the work of delivering notifications.

Agency maintainers manage their agency's webhooks, platform administrators
every agency's; each change records one audit event. Deliveries are an
operational log, not governed state: they are written here without audit
events (the audit event they announce is already in the chain).

How an event travels: ``audit.services.record`` commits an event and sends
``event_recorded``; ``on_event_recorded`` writes one ``WebhookDelivery`` per
subscribed, enabled webhook of the event's agency and queues
``civitas.webhook_deliver`` for each, and ``civitas.notification_email`` once
when someone is to be e-mailed.
``delivery_attempt`` makes one signed attempt and says when to try again
(exponential backoff, at most ``CIVITAS_WEBHOOK_MAX_ATTEMPTS``);
``delivery_sweep`` re-queues what a lost message or a killed worker left.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import AuditEvent
from audit.verify import format_timestamp
from config.celery import app as celery_app
from config.exceptions import DomainError, PolicyViolation
from notifications import events, mail, signing, transport
from notifications.models import DeliveryStatus, Webhook, WebhookDelivery
from registry.models import (
    Agency,
    Role,
    is_platform_admin,
    user_agency_id,
    user_membership,
    user_role,
)
from registry.services.changes import UNSET

logger = logging.getLogger(__name__)

DELIVER_TASK = "civitas.webhook_deliver"
EMAIL_TASK = "civitas.notification_email"
BACKOFF_CAP_SECONDS = 3600  # below the broker's visibility timeout
USER_AGENT = "Civitas-Webhooks/1"


def _field_error(field: str, message: str, code: str) -> DomainError:
    return DomainError(
        message, code=code, fields={field: [{"code": code, "message": message}]}
    )


def _require_manager(actor, agency: Agency) -> None:
    """Platform administrators manage every agency's webhooks, maintainers theirs."""
    if is_platform_admin(actor):
        return
    if user_role(actor) != Role.MAINTAINER or user_agency_id(actor) != agency.pk:
        raise PolicyViolation(
            "Only the agency's maintainers or a platform administrator manage "
            "its webhooks.",
            code="permission_denied",
        )


def _clean_url(url: str) -> str:
    """The URL if its scheme is allowed and its host is no internal literal."""
    try:
        parsed = transport.check_url(url)
    except transport.Refused as exc:
        allowed = "http or https" if settings.CIVITAS_WEBHOOK_ALLOW_HTTP else "https"
        raise _field_error(
            "url", f"The URL must be an {allowed} URL with a host.", str(exc)
        ) from exc
    host = parsed.host.strip("[]")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    internal = host == "localhost" or host.endswith(".localhost")
    if literal is not None:
        internal = not transport.is_public_address(host)
    if internal and not settings.CIVITAS_WEBHOOK_ALLOW_PRIVATE:
        raise _field_error(
            "url",
            "Webhooks may not call private, loopback or link-local addresses.",
            "address_refused",
        )
    return url


def _clean_event_types(event_types: list[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(events.EVENT_TYPES))
    if unknown:
        raise _field_error(
            "event_types", f"Unknown event types: {', '.join(unknown)}.", "invalid"
        )
    if not event_types:
        raise _field_error(
            "event_types", "Subscribe to at least one event type.", "required"
        )
    return sorted(set(event_types))


@transaction.atomic
def webhook_create(
    *,
    actor,
    agency: Agency | None,
    url: str,
    event_types: list[str],
    description: str = "",
    is_enabled: bool = True,
) -> tuple[Webhook, str]:
    """Register a webhook for ``agency``; return it and its secret, shown once.

    ``agency`` None means the actor's own agency. Raises ``PolicyViolation``
    unless the actor manages the agency's webhooks, ``DomainError`` for no
    agency, a refused URL or unknown event types. Records ``webhook.created``
    (without the secret).
    """
    if agency is None:
        membership = user_membership(actor)
        if membership is None:
            raise _field_error(
                "agency", "Name the agency the webhook belongs to.", "required"
            )
        agency = membership.agency
    _require_manager(actor, agency)
    secret = signing.new_secret()
    webhook = Webhook.objects.create(
        agency=agency,
        url=_clean_url(url),
        event_types=_clean_event_types(event_types),
        description=description,
        is_enabled=is_enabled,
        secret_encrypted=signing.encrypt(secret),
        created_by=actor,
    )
    audit.record(
        actor=actor,
        action="webhook.created",
        obj=webhook,
        payload={
            "url": webhook.url,
            "event_types": webhook.event_types,
            "is_enabled": webhook.is_enabled,
        },
    )
    return webhook, secret


@transaction.atomic
def webhook_update(
    *,
    actor,
    webhook: Webhook,
    url: str = UNSET,
    event_types: list[str] = UNSET,
    description: str = UNSET,
    is_enabled: bool = UNSET,
) -> Webhook:
    """Change a webhook's URL, events, description or enabled flag.

    Raises what ``webhook_create`` raises. Records ``webhook.updated`` with
    the changed fields, when any changed.
    """
    _require_manager(actor, webhook.agency)
    locked = Webhook.objects.select_for_update().get(pk=webhook.pk)
    values = {
        "url": url if url is UNSET else _clean_url(url),
        "event_types": event_types
        if event_types is UNSET
        else _clean_event_types(event_types),
        "description": description,
        "is_enabled": is_enabled,
    }
    changed = {}
    for name, value in values.items():
        if value is not UNSET and getattr(locked, name) != value:
            changed[name] = {"from": getattr(locked, name), "to": value}
            setattr(locked, name, value)
    if changed:
        locked.save(update_fields=[*changed, "updated_at"])
        audit.record(
            actor=actor,
            action="webhook.updated",
            obj=locked,
            payload={"changed": changed},
        )
    return locked


@transaction.atomic
def webhook_rotate_secret(*, actor, webhook: Webhook) -> tuple[Webhook, str]:
    """Give a webhook a new secret, shown once; the old one signs on for a while.

    For ``CIVITAS_WEBHOOK_SECRET_GRACE_HOURS`` every request carries both
    signatures (space-separated, as the Standard Webhooks spec allows), so a
    receiver can switch secrets without losing a delivery. A secret still in
    its grace period is dropped by a second rotation. Records
    ``webhook.secret_rotated``.
    """
    _require_manager(actor, webhook.agency)
    locked = Webhook.objects.select_for_update().get(pk=webhook.pk)
    now = timezone.now()
    secret = signing.new_secret()
    locked.previous_secret_encrypted = locked.secret_encrypted
    locked.previous_secret_expires_at = now + timedelta(
        hours=settings.CIVITAS_WEBHOOK_SECRET_GRACE_HOURS
    )
    locked.secret_encrypted = signing.encrypt(secret)
    locked.secret_rotated_at = now
    locked.save()
    audit.record(
        actor=actor,
        action="webhook.secret_rotated",
        obj=locked,
        payload={"previous_valid_until": locked.previous_secret_expires_at},
    )
    return locked, secret


@transaction.atomic
def webhook_ping(*, actor, webhook: Webhook) -> WebhookDelivery:
    """Queue a ``webhook.ping`` delivery to the webhook, even a disabled one.

    Records ``webhook.pinged``.
    """
    _require_manager(actor, webhook.agency)
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        event_id=f"msg_ping_{uuid.uuid4().hex}",
        event_type=events.PING,
        payload={
            "type": events.PING,
            "timestamp": format_timestamp(now),
            "data": {"agency": webhook.agency.slug, "webhook_id": webhook.pk},
        },
        next_attempt_at=now,
    )
    audit.record(
        actor=actor,
        action="webhook.pinged",
        obj=webhook,
        payload={"delivery_id": delivery.pk, "event_id": delivery.event_id},
    )
    transaction.on_commit(lambda: _send(DELIVER_TASK, delivery_id=delivery.pk))
    return delivery


# --- from the audit chain to deliveries ------------------------------------------


def _send(task: str, **kwargs) -> None:
    """Queue a task now; if the broker is down, ``delivery_sweep`` finds the row."""
    try:
        celery_app.send_task(task, kwargs=kwargs)
    except Exception:
        logger.warning("could not queue %s %s", task, kwargs, exc_info=True)


def on_event_recorded(sender, event: AuditEvent, **kwargs) -> None:
    """Receiver of ``audit.signals.event_recorded``: fan a notifying event out."""
    if not events.notifies(event.action, event.payload_data):
        return
    event_fanout(event=event)
    if mail.recipients(event):
        _send(EMAIL_TASK, event_seq=event.seq)


def event_fanout(*, event: AuditEvent) -> list[WebhookDelivery]:
    """One delivery per enabled webhook of the event's agency subscribed to it.

    Another agency's webhooks never receive it; an event without an agency
    reaches no webhook. Safe to run twice: (webhook, event id) is unique.
    """
    if event.agency_id is None or not events.notifies(event.action, event.payload_data):
        return []
    webhooks = [
        w
        for w in Webhook.objects.filter(agency_id=event.agency_id, is_enabled=True)
        if event.action in w.event_types
    ]
    if not webhooks:
        return []
    payload = events.webhook_payload(event)
    now = timezone.now()
    created = []
    with transaction.atomic():
        for webhook in webhooks:
            delivery, is_new = WebhookDelivery.objects.get_or_create(
                webhook=webhook,
                event_id=events.event_id(event.seq),
                defaults={
                    "event_type": event.action,
                    "audit_seq": event.seq,
                    "payload": payload,
                    "next_attempt_at": now,
                },
            )
            if is_new:
                created.append(delivery)
        for delivery in created:
            transaction.on_commit(
                lambda pk=delivery.pk: _send(DELIVER_TASK, delivery_id=pk)
            )
    return created


# --- attempts ----------------------------------------------------------------


def backoff_seconds(attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt: base * 2**(n-1), capped."""
    base = settings.CIVITAS_WEBHOOK_BACKOFF_SECONDS
    return float(min(base * 2 ** max(attempts - 1, 0), BACKOFF_CAP_SECONDS))


def _body(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _secrets(webhook: Webhook, now) -> list[str]:
    found = [signing.decrypt(webhook.secret_encrypted)]
    expires = webhook.previous_secret_expires_at
    if webhook.previous_secret_encrypted and expires is not None and expires > now:
        found.append(signing.decrypt(webhook.previous_secret_encrypted))
    return found


def signed_request(delivery: WebhookDelivery, *, now) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt, signed at ``now``."""
    body = _body(delivery.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signing.signature_header(
            _secrets(delivery.webhook, now),
            msg_id=delivery.event_id,
            timestamp=now,
            body=body,
        ),
    }
    return body.encode("utf-8"), headers


def _outcome(delivery: WebhookDelivery, now) -> transport.Outcome:
    if not delivery.webhook.is_enabled and delivery.event_type != events.PING:
        return transport.Outcome(None, error="webhook_disabled")
    try:
        body, headers = signed_request(delivery, now=now)
    except signing.SecretUnreadable:
        return transport.Outcome(None, error="secret_unreadable")
    return transport.post(delivery.webhook.url, body=body, headers=headers)


def delivery_attempt(*, delivery_id: int) -> float | None:
    """Make one attempt at a due delivery; the seconds until the next, or None.

    Claims the row with a conditional update (pending and due -> sending), so
    a duplicate message does nothing; no transaction is held over the
    request. A 2xx ends it ``delivered``; anything else (3xx included: no
    redirect is followed, a refused address, a timeout) counts one attempt,
    and the last allowed attempt ends it ``failed``.
    """
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id,
        status=DeliveryStatus.PENDING,
        next_attempt_at__lte=now + timedelta(seconds=1),
    ).update(status=DeliveryStatus.SENDING, claimed_at=now)
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    outcome = _outcome(delivery, timezone.now())
    attempts = delivery.attempts + 1
    fields = {
        "attempts": attempts,
        "status_codes": [*delivery.status_codes, outcome.status_code],
        "last_error": outcome.error
        or ("" if outcome.ok else f"HTTP {outcome.status_code}"),
        "response_excerpt": outcome.excerpt,
        "claimed_at": None,
        "updated_at": timezone.now(),
    }
    delay = None
    if outcome.ok:
        fields |= {"status": DeliveryStatus.DELIVERED, "delivered_at": timezone.now()}
        fields["next_attempt_at"] = None
    elif attempts >= settings.CIVITAS_WEBHOOK_MAX_ATTEMPTS:
        fields |= {"status": DeliveryStatus.FAILED, "next_attempt_at": None}
    else:
        delay = backoff_seconds(attempts)
        fields |= {
            "status": DeliveryStatus.PENDING,
            "next_attempt_at": timezone.now() + timedelta(seconds=delay),
        }
    WebhookDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.SENDING
    ).update(**fields)
    return delay


def delivery_sweep() -> dict[str, int]:
    """Re-queue deliveries whose message was lost or whose worker died.

    A pending delivery overdue by a minute lost its message; one still
    ``sending`` past twice the request budget lost its worker and goes back
    to pending (that attempt is not counted: no outcome was recorded).
    """
    now = timezone.now()
    budget = (
        settings.CIVITAS_WEBHOOK_CONNECT_TIMEOUT_SECONDS
        + settings.CIVITAS_WEBHOOK_READ_TIMEOUT_SECONDS
    )
    stale = WebhookDelivery.objects.filter(
        status=DeliveryStatus.SENDING,
        claimed_at__lt=now - timedelta(seconds=2 * budget + 60),
    ).update(status=DeliveryStatus.PENDING, claimed_at=None, next_attempt_at=now)
    overdue = list(
        WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING,
            next_attempt_at__lt=now - timedelta(minutes=1),
        ).values_list("pk", flat=True)[:1000]
    )
    for pk in overdue:
        _send(DELIVER_TASK, delivery_id=pk)
    return {"reclaimed": stale, "requeued": len(overdue)}
