"""E-mail about notifying events to the people concerned, through Django's backend.

Who: the event's agency's maintainers for every notifying event, and the
oversight bodies' reviewers for suspensions and incidents
(``notifications.events``); active accounts with an address only. One
message per person, so no one sees the others' addresses. The backend is
``EMAIL_URL`` (console by default), with ``EMAIL_TIMEOUT`` bounding SMTP.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction

from audit.models import AuditEvent
from notifications import events
from notifications.models import NotificationEmail
from registry.models import Membership, Role


def recipients(event: AuditEvent) -> list[str]:
    """The addresses to tell about ``event`` (sorted, without duplicates)."""
    kind = events.EVENT_TYPES.get(event.action)
    if kind is None:
        return []
    people = Membership.objects.none()
    if events.MAINTAINERS in kind.audience and event.agency_id is not None:
        people |= Membership.objects.filter(
            agency_id=event.agency_id, role=Role.MAINTAINER
        )
    if events.REVIEWERS in kind.audience:
        people |= Membership.objects.filter(
            role=Role.REVIEWER, agency__is_oversight_body=True
        )
    addresses = people.filter(user__is_active=True).exclude(user__email="")
    return sorted(set(addresses.values_list("user__email", flat=True)))


def _message(event: AuditEvent, address: str) -> EmailMessage:
    kind = events.EVENT_TYPES[event.action]
    subject = f"[Civitas] {event.action}: {event.object_type} {event.object_id}"
    body = "\n".join(
        [
            kind.description,
            "",
            f"Event: {event.action} (audit event #{event.seq})",
            f"Agency: {event.agency_slug or '-'}",
            f"Object: {event.object_type} {event.object_id}",
            f"By: {event.actor_label}",
            f"At: {event.created_at.isoformat()}",
            "",
            "Details:",
            json.dumps(event.payload_data, indent=2, sort_keys=True),
        ]
    )
    return EmailMessage(
        subject=subject[:200],
        body=body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
    )


def notification_email_send(*, event_seq: int) -> int:
    """E-mail the people concerned by audit event ``event_seq``; how many were sent.

    Sent at most once per event: a ``NotificationEmail`` row is written in
    the same transaction as the sending, so a duplicate task finds it and
    sends nothing, and a failed send (the backend raised) leaves no row and
    may be tried again.
    """
    event = AuditEvent.objects.filter(seq=event_seq).first()
    if event is None or not events.notifies(event.action, event.payload_data):
        return 0
    to = recipients(event)
    if not to:
        return 0
    try:
        with transaction.atomic():
            NotificationEmail.objects.create(
                audit_seq=event.seq, event_type=event.action, recipients=to
            )
            connection = get_connection(fail_silently=False)
            return connection.send_messages([_message(event, a) for a in to]) or 0
    except IntegrityError:
        return 0
