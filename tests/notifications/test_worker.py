"""The whole path in real processes: commit -> signal -> Celery worker -> receiver.

A real worker process consumes ``civitas.webhook_deliver`` and
``civitas.notification_email``; the receiver (an http.server in a thread)
fails twice and then succeeds, and verifies every signature with an
independent implementation of the spec. The worker's mail goes to a file
backend, read back here.
"""

from __future__ import annotations

import shutil
import uuid

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from kombu import Connection

from audit import services as audit
from notifications.models import DeliveryStatus, WebhookDelivery
from tests.audit.test_audit import committed_audit_rows  # noqa: F401  (fixture)
from tests.conftest import (
    ROOT,
    celery_worker,
    database_url,
    process_env,
    wait_until,
    worker_queues,
)
from tests.notifications.conftest import make_webhook, signatures_valid_for


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("committed_audit_rows")
def test_a_worker_delivers_with_backoff_and_mails_the_maintainers(
    agency_a, maintainer_a, receiver, local_webhooks
):
    receiver.answer(500, b"down")
    receiver.answer(503, b"still down")
    webhook, secret = make_webhook(
        maintainer_a, agency_a, receiver.url, ["use_case.suspended"]
    )
    mail_dir = f"var/test/mail-{uuid.uuid4().hex[:8]}"
    default = django_settings.CELERY_TASK_DEFAULT_QUEUE
    env = process_env(
        DATABASE_URL=database_url(),
        CIVITAS_WEBHOOK_ALLOW_HTTP="true",
        CIVITAS_WEBHOOK_ALLOW_PRIVATE="true",
        CIVITAS_WEBHOOK_BACKOFF_SECONDS="1",
        EMAIL_URL=f"filemail:///{mail_dir}",
    )
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge(default)

    with celery_worker(env, worker_queues()):
        with transaction.atomic():
            event = audit.record(
                actor=None,
                action="use_case.suspended",
                agency=agency_a,
                object_type="governance.usecase",
                object_id="5",
                payload={"from": "approved", "to": "suspended"},
            )
        delivery = wait_until(
            lambda: WebhookDelivery.objects.filter(
                webhook=webhook, status=DeliveryStatus.DELIVERED
            ).first(),
            timeout=60,
            what="the delivery to succeed on its third attempt",
        )
        mails = wait_until(
            lambda: [p.read_text() for p in (ROOT / mail_dir).glob("*.log")],
            timeout=30,
            what="the worker's e-mail",
        )

    assert delivery.attempts == 3
    assert delivery.status_codes == [500, 503, 200]
    assert delivery.audit_seq == event.seq
    assert len(receiver.received) == 3
    assert all(signatures_valid_for(secret, r) for r in receiver.received)
    assert {r.headers["webhook-id"] for r in receiver.received} == {delivery.event_id}
    assert len(mails) == 1 and f"To: {maintainer_a.email}" in mails[0]
    assert "use_case.suspended" in mails[0]
    shutil.rmtree(ROOT / mail_dir, ignore_errors=True)
