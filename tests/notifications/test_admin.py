"""The admin shows webhooks and their delivery log read-only, never a secret."""

from __future__ import annotations

import pytest
from django.test import Client

from notifications.models import WebhookDelivery
from tests.notifications.conftest import make_webhook

pytestmark = pytest.mark.django_db


def test_the_delivery_log_is_read_only_in_the_admin(
    platform_admin, agency_a, maintainer_a, local_webhooks
):
    webhook, secret = make_webhook(
        maintainer_a, agency_a, "http://127.0.0.1:9/", ["use_case.suspended"]
    )
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        event_id="msg_audit_1",
        event_type="use_case.suspended",
        payload={"type": "use_case.suspended"},
    )
    client = Client()
    client.force_login(platform_admin)
    base = "/admin/notifications"

    listing = client.get(f"{base}/webhookdelivery/")
    detail = client.get(f"{base}/webhookdelivery/{delivery.pk}/change/")
    hook = client.get(f"{base}/webhook/{webhook.pk}/change/")

    assert listing.status_code == 200 and b"use_case.suspended" in listing.content
    assert detail.status_code == 200 and b"msg_audit_1" in detail.content
    assert b'name="_save"' not in detail.content
    assert hook.status_code == 200 and secret.encode() not in hook.content
    assert webhook.secret_encrypted.encode() not in hook.content
    assert client.get(f"{base}/webhookdelivery/add/").status_code == 403
    assert (
        client.post(f"{base}/webhookdelivery/{delivery.pk}/delete/").status_code == 403
    )
