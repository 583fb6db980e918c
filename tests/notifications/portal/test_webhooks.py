"""The webhook pages: maintainers only, the secret shown once, the delivery log."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from notifications import services
from notifications.models import DeliveryStatus, Webhook, WebhookDelivery
from tests.notifications.conftest import make_webhook, signatures_valid_for

pytestmark = pytest.mark.django_db

LIST = reverse("notifications_portal:webhook-list")
NEW = reverse("notifications_portal:webhook-create")
URL = "https://hooks.city-a.example/civitas"


def _detail(webhook) -> str:
    return reverse("notifications_portal:webhook-detail", args=[webhook.pk])


@pytest.fixture
def webhook(maintainer_a):
    hook, _secret = make_webhook(
        maintainer_a, None, URL, ["use_case.approved"], description="Our desk"
    )
    return hook


def _secret_on(page: str) -> str:
    return re.search(r'value="(whsec_[^"]+)"', page).group(1)


def test_anonymous_readers_are_sent_to_sign_in(client, webhook):
    for url in (LIST, NEW, _detail(webhook), f"{_detail(webhook)}edit/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_c1_members_and_other_agencies_get_404(client, member_a, maintainer_b, webhook):
    for person in (member_a, maintainer_b):
        client.force_login(person)
        for url in (_detail(webhook), f"{_detail(webhook)}edit/"):
            assert client.get(url).status_code == 404
        for action in ("toggle", "rotate-secret", "ping"):
            assert client.post(f"{_detail(webhook)}{action}/").status_code == 404
        assert URL not in client.get(LIST).content.decode()
    webhook.refresh_from_db()
    assert webhook.is_enabled and webhook.secret_rotated_at is None
    assert not WebhookDelivery.objects.exists()


def test_a_member_may_not_register_one(client, member_a):
    client.force_login(member_a)
    assert "Only your agency's maintainers" in client.get(LIST).content.decode()
    response = client.post(NEW, {"url": URL, "event_types": ["use_case.approved"]})
    assert response.status_code == 403
    assert "maintainers" in response.content.decode()
    assert not Webhook.objects.exists()


def test_a_maintainer_registers_one_and_sees_its_secret_once(
    client, maintainer_a, receiver, local_webhooks
):
    client.force_login(maintainer_a)
    response = client.post(
        NEW,
        {
            "url": receiver.url,
            "description": "Front desk",
            "event_types": ["use_case.approved", "use_case.suspended"],
            "is_enabled": "on",
        },
    )
    webhook = Webhook.objects.get()
    page = response.content.decode()
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("no-store") or (
        "no-store" in response["Cache-Control"]
    )
    secret = _secret_on(page)
    assert webhook.agency == maintainer_a.membership.agency
    assert webhook.event_types == ["use_case.approved", "use_case.suspended"]
    assert AuditEvent.objects.filter(
        action="webhook.created", object_id=str(webhook.pk)
    ).exists()
    assert secret not in client.get(_detail(webhook)).content.decode()

    # The secret shown is the one that signs: a real delivery to a real server.
    client.post(f"{_detail(webhook)}ping/")
    delivery = WebhookDelivery.objects.get()
    services.delivery_attempt(delivery_id=delivery.pk)
    assert signatures_valid_for(secret, receiver.received[0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"url": "ftp://x.example/", "event_types": ["use_case.approved"]},
            "must be an https URL",
        ),
        ({"url": URL, "event_types": []}, "This list may not be empty"),
        (
            {"url": "https://127.0.0.1/hook", "event_types": ["use_case.approved"]},
            "private, loopback or link-local",
        ),
    ],
)
def test_bad_input_is_a_form_error(client, maintainer_a, data, message):
    client.force_login(maintainer_a)
    response = client.post(NEW, data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Webhook.objects.exists()


def test_edit_disable_and_rotate_through_the_service(client, maintainer_a, webhook):
    client.force_login(maintainer_a)
    response = client.post(
        f"{_detail(webhook)}edit/",
        {
            "url": URL + "/v2",
            "description": "Our desk",
            "event_types": ["incident.reported"],
            "is_enabled": "on",
        },
    )
    assert response.status_code == 302
    webhook.refresh_from_db()
    assert webhook.url == URL + "/v2" and webhook.event_types == ["incident.reported"]

    client.post(f"{_detail(webhook)}toggle/")
    webhook.refresh_from_db()
    assert not webhook.is_enabled

    rotated = client.post(f"{_detail(webhook)}rotate-secret/")
    assert rotated.status_code == 200
    assert _secret_on(rotated.content.decode()).startswith("whsec_")
    webhook.refresh_from_db()
    assert webhook.secret_rotated_at is not None
    actions = set(
        AuditEvent.objects.filter(object_id=str(webhook.pk)).values_list(
            "action", flat=True
        )
    )
    assert {"webhook.updated", "webhook.secret_rotated"} <= actions


def test_the_delivery_log_shows_status_attempts_codes_and_next_retry(
    client, maintainer_a, receiver, local_webhooks
):
    webhook, _secret = make_webhook(
        maintainer_a, None, receiver.url, ["use_case.approved"]
    )
    local_webhooks.CIVITAS_WEBHOOK_BACKOFF_SECONDS = 600
    receiver.answer(503, b"busy")
    client.force_login(maintainer_a)
    client.post(f"{_detail(webhook)}ping/")
    client.post(f"{_detail(webhook)}ping/")
    failing, delivered = WebhookDelivery.objects.order_by("pk")
    services.delivery_attempt(delivery_id=failing.pk)
    services.delivery_attempt(delivery_id=delivered.pk)

    page = client.get(_detail(webhook)).content.decode()
    assert "waiting for its next attempt" in page and "delivered" in page
    assert "503" in page and "200" in page
    assert "HTTP 503" in page
    failing.refresh_from_db()
    assert failing.status == DeliveryStatus.PENDING and failing.next_attempt_at


def test_pages_take_a_constant_number_of_queries(
    client, maintainer_a, django_assert_max_num_queries
):
    def add(count):
        for index in range(count):
            hook, _ = make_webhook(
                maintainer_a, None, f"{URL}/{index}", ["use_case.approved"]
            )
            for _ in range(count):
                WebhookDelivery.objects.create(
                    webhook=hook,
                    event_id=f"msg_{hook.pk}_{_}",
                    event_type="webhook.ping",
                    payload={},
                    status_codes=[503, 200],
                )
        return hook

    client.force_login(maintainer_a)
    first = add(2)
    with django_assert_max_num_queries(20) as few:
        client.get(LIST)
        client.get(_detail(first))
    last = add(18)
    with django_assert_max_num_queries(len(few.captured_queries)):
        listed = client.get(LIST)
        client.get(_detail(last))
    assert listed.content.decode().count(f"{URL}/") == 20
