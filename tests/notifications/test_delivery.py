"""From an audit event to signed, retried webhook deliveries (in this process)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from notifications import selectors, services
from notifications.models import DeliveryStatus, WebhookDelivery
from notifications.transport import MAX_RESPONSE_BYTES
from registry import services as registry_services
from tests.factories import AIModelFactory, ModelVersionFactory
from tests.notifications.conftest import make_webhook, signatures_valid_for
from tests.silent_peer import silent_peer

STATUS = "model_version.status_changed"
pytestmark = pytest.mark.django_db


def _status_change(version, django_capture_on_commit_callbacks):
    """Suspend ``version`` through the registry's service and run the on-commit work."""
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        registry_services.model_version_status_sync(
            actor=None, version=version, status="suspended"
        )


def _record(action, agency, payload, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        return audit.record(
            actor=None,
            action=action,
            agency=agency,
            object_type="governance.usecase",
            object_id="1",
            payload=payload,
        )


def test_an_event_reaches_only_its_agencys_enabled_subscribed_webhooks(
    agency_a,
    agency_b,
    maintainer_a,
    maintainer_b,
    local_webhooks,
    django_capture_on_commit_callbacks,
):
    url = "http://127.0.0.1:9/hook"
    subscribed, _ = make_webhook(maintainer_a, agency_a, url, [STATUS])
    make_webhook(maintainer_a, agency_a, url, ["use_case.suspended"])
    make_webhook(maintainer_a, agency_a, url, [STATUS], is_enabled=False)
    other_agency, _ = make_webhook(maintainer_b, agency_b, url, [STATUS])
    version = ModelVersionFactory(model=AIModelFactory(agency=agency_a))

    _status_change(version, django_capture_on_commit_callbacks)

    deliveries = list(WebhookDelivery.objects.all())
    assert [d.webhook_id for d in deliveries] == [subscribed.pk]
    delivery = deliveries[0]
    assert delivery.event_type == STATUS
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.payload["type"] == STATUS
    assert delivery.payload["data"]["agency"] == agency_a.slug
    assert delivery.payload["data"]["details"]["to"] == "suspended"
    assert delivery.event_id == f"msg_audit_{delivery.audit_seq}"
    assert not other_agency.deliveries.exists()


def test_announcing_an_event_twice_delivers_it_once(
    agency_a, maintainer_a, local_webhooks, django_capture_on_commit_callbacks
):
    make_webhook(maintainer_a, agency_a, "http://127.0.0.1:9/", ["use_case.suspended"])
    event = _record(
        "use_case.suspended",
        agency_a,
        {"to": "suspended"},
        django_capture_on_commit_callbacks,
    )

    assert services.event_fanout(event=event) == []
    assert WebhookDelivery.objects.count() == 1


def test_policy_evaluations_notify_only_when_they_fail(
    agency_a, maintainer_a, local_webhooks, django_capture_on_commit_callbacks
):
    make_webhook(maintainer_a, agency_a, "http://127.0.0.1:9/", ["policy.evaluated"])

    _record(
        "policy.evaluated",
        agency_a,
        {"passed": True},
        django_capture_on_commit_callbacks,
    )
    assert WebhookDelivery.objects.count() == 0
    _record(
        "policy.evaluated",
        agency_a,
        {"passed": False},
        django_capture_on_commit_callbacks,
    )
    assert WebhookDelivery.objects.get().payload["data"]["details"] == {"passed": False}


def test_a_rolled_back_event_notifies_nobody(
    agency_a, maintainer_a, local_webhooks, django_capture_on_commit_callbacks
):
    make_webhook(maintainer_a, agency_a, "http://127.0.0.1:9/", ["use_case.suspended"])
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        audit.record(actor=None, action="use_case.suspended", agency=agency_a)
        raise RuntimeError("roll back")

    assert WebhookDelivery.objects.count() == 0


def _pending(maintainer, agency, url, django_capture_on_commit_callbacks):
    webhook, secret = make_webhook(maintainer, agency, url, ["use_case.suspended"])
    _record(
        "use_case.suspended",
        agency,
        {"to": "suspended"},
        django_capture_on_commit_callbacks,
    )
    return webhook, secret, WebhookDelivery.objects.get(webhook=webhook)


def test_failed_attempts_are_retried_with_backoff_and_every_request_is_signed(
    agency_a, maintainer_a, receiver, local_webhooks, django_capture_on_commit_callbacks
):
    local_webhooks.CIVITAS_WEBHOOK_BACKOFF_SECONDS = 30
    receiver.answer(500, b"boom")
    receiver.answer(503, b"later")
    _, secret, delivery = _pending(
        maintainer_a, agency_a, receiver.url, django_capture_on_commit_callbacks
    )

    assert services.delivery_attempt(delivery_id=delivery.pk) == 30.0
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=25)
    # Not due yet: a duplicate message does nothing.
    assert services.delivery_attempt(delivery_id=delivery.pk) is None
    assert len(receiver.received) == 1

    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now()
    )
    assert services.delivery_attempt(delivery_id=delivery.pk) == 60.0
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now()
    )
    assert services.delivery_attempt(delivery_id=delivery.pk) is None

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 3
    assert delivery.status_codes == [500, 503, 200]
    assert delivery.response_excerpt == "ok"
    assert len(receiver.received) == 3
    for request in receiver.received:
        assert request.path == "/hooks/civitas"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"] == delivery.event_id
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
        assert signatures_valid_for(secret, request)
        assert json.loads(request.body) == delivery.payload
    assert not signatures_valid_for("whsec_" + "A" * 43 + "=", receiver.received[0])


def test_a_delivery_fails_after_the_last_attempt_and_is_counted(
    agency_a, maintainer_a, receiver, local_webhooks, django_capture_on_commit_callbacks
):
    local_webhooks.CIVITAS_WEBHOOK_MAX_ATTEMPTS = 2
    receiver.answer(500)
    receiver.answer(500)
    _, _, delivery = _pending(
        maintainer_a, agency_a, receiver.url, django_capture_on_commit_callbacks
    )
    assert selectors.webhook_failures() == {agency_a.slug: 0}

    assert services.delivery_attempt(delivery_id=delivery.pk) == 0.0
    assert services.delivery_attempt(delivery_id=delivery.pk) is None

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.status_codes == [500, 500]
    assert delivery.last_error == "HTTP 500"
    assert selectors.webhook_failures() == {agency_a.slug: 1}
    assert services.delivery_attempt(delivery_id=delivery.pk) is None  # final


def test_c11_redirects_are_not_followed(
    agency_a, maintainer_a, receiver, local_webhooks, django_capture_on_commit_callbacks
):
    receiver.answer(302, b"", Location="http://169.254.169.254/latest/meta-data/")
    _, _, delivery = _pending(
        maintainer_a, agency_a, receiver.url, django_capture_on_commit_callbacks
    )

    services.delivery_attempt(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status_codes == [302]
    assert delivery.status == DeliveryStatus.PENDING
    assert len(receiver.received) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_c11_private_and_loopback_destinations_are_refused_at_delivery(
    host,
    agency_a,
    maintainer_a,
    receiver,
    local_webhooks,
    django_capture_on_commit_callbacks,
):
    port = receiver.url.split(":")[2].split("/")[0]
    _, _, delivery = _pending(
        maintainer_a,
        agency_a,
        f"http://{host}:{port}/hooks/civitas",
        django_capture_on_commit_callbacks,
    )
    local_webhooks.CIVITAS_WEBHOOK_ALLOW_PRIVATE = False

    services.delivery_attempt(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.last_error == "address_refused"
    assert delivery.status_codes == [None]
    assert receiver.received == []


def test_a_silent_peer_costs_one_bounded_attempt(
    agency_a, maintainer_a, local_webhooks, django_capture_on_commit_callbacks
):
    local_webhooks.CIVITAS_WEBHOOK_CONNECT_TIMEOUT_SECONDS = 1
    local_webhooks.CIVITAS_WEBHOOK_READ_TIMEOUT_SECONDS = 1
    with silent_peer() as (host, port):
        _, _, delivery = _pending(
            maintainer_a,
            agency_a,
            f"http://{host}:{port}/",
            django_capture_on_commit_callbacks,
        )
        started = time.monotonic()
        services.delivery_attempt(delivery_id=delivery.pk)
        elapsed = time.monotonic() - started

    delivery.refresh_from_db()
    assert elapsed < 10  # a 1 s read timeout, with generous slack
    assert delivery.last_error == "timeout"
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1


def test_the_response_read_is_capped(
    agency_a, maintainer_a, receiver, local_webhooks, django_capture_on_commit_callbacks
):
    receiver.answer(200, b"x" * (4 * MAX_RESPONSE_BYTES))
    _, _, delivery = _pending(
        maintainer_a, agency_a, receiver.url, django_capture_on_commit_callbacks
    )

    services.delivery_attempt(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.response_excerpt == "x" * 1000


def test_a_rotated_secret_signs_alongside_the_new_one_until_its_grace_ends(
    agency_a, maintainer_a, receiver, local_webhooks, django_capture_on_commit_callbacks
):
    webhook, old, delivery = _pending(
        maintainer_a, agency_a, receiver.url, django_capture_on_commit_callbacks
    )
    with transaction.atomic():
        webhook, new = services.webhook_rotate_secret(
            actor=maintainer_a, webhook=webhook
        )
    assert new != old and new.startswith("whsec_")

    services.delivery_attempt(delivery_id=delivery.pk)
    both = receiver.received[-1]
    assert len(both.headers["webhook-signature"].split(" ")) == 2
    assert signatures_valid_for(old, both) and signatures_valid_for(new, both)

    type(webhook).objects.filter(pk=webhook.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    with transaction.atomic():
        ping = services.webhook_ping(actor=maintainer_a, webhook=webhook)
    services.delivery_attempt(delivery_id=ping.pk)
    after = receiver.received[-1]
    assert json.loads(after.body)["type"] == "webhook.ping"
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert signatures_valid_for(new, after) and not signatures_valid_for(old, after)


def test_the_sweep_requeues_lost_messages_and_reclaims_dead_attempts(
    agency_a, maintainer_a, local_webhooks, django_capture_on_commit_callbacks
):
    _, _, delivery = _pending(
        maintainer_a,
        agency_a,
        "http://127.0.0.1:9/",
        django_capture_on_commit_callbacks,
    )
    long_ago = timezone.now() - timedelta(hours=1)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.SENDING, claimed_at=long_ago
    )

    assert services.delivery_sweep() == {"reclaimed": 1, "requeued": 0}
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=long_ago)
    assert services.delivery_sweep() == {"reclaimed": 0, "requeued": 1}


def test_the_host_name_is_sent_and_refusing_addresses_are_skipped(
    agency_a, maintainer_a, receiver, local_webhooks, django_capture_on_commit_callbacks
):
    port = receiver.url.split(":")[2].split("/")[0]
    # localhost may resolve to ::1 first, where nothing listens: skipped.
    _, _, delivery = _pending(
        maintainer_a,
        agency_a,
        f"http://localhost:{port}/hooks/civitas?agency=a",
        django_capture_on_commit_callbacks,
    )

    services.delivery_attempt(delivery_id=delivery.pk)

    (request,) = receiver.received
    assert request.headers["host"] == f"localhost:{port}"
    assert request.path == "/hooks/civitas?agency=a"


def test_a_refused_connection_is_a_failed_attempt(
    agency_a, maintainer_a, local_webhooks, django_capture_on_commit_callbacks
):
    with silent_peer() as (host, port):
        pass  # the port is free again: connecting is refused at once
    _, _, delivery = _pending(
        maintainer_a,
        agency_a,
        f"http://{host}:{port}/",
        django_capture_on_commit_callbacks,
    )

    services.delivery_attempt(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.last_error == "connection_failed"
    assert delivery.status_codes == [None]
