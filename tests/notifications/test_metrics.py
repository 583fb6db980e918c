"""/metrics carries the backlogs of the outboxes: MLflow messages and webhooks."""

from __future__ import annotations

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from governance.models import OutboxKind, OutboxMessage
from notifications.models import DeliveryStatus, WebhookDelivery
from tests.notifications.conftest import make_webhook

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-fedcba9876543210"


def _scrape(client) -> dict[str, list]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    families = text_string_to_metric_families(response.content.decode())
    return {family.name: family.samples for family in families}


def test_outbox_and_webhook_failure_gauges_match_the_database(
    client, settings, local_webhooks, maintainer_a, agency_a, maintainer_b, agency_b
):
    settings.METRICS_TOKEN = TOKEN
    kind = OutboxKind.values[0]
    # Set-up only: three messages owed to MLflow, one of them already failing,
    # and one delivered (not owed).
    for n, (attempts, delivered) in enumerate([(0, False), (2, False), (0, False),
                                               (1, True)]):
        OutboxMessage.objects.create(
            kind=kind, payload={}, dedupe_key=f"metrics-test:{n}", attempts=attempts,
            delivered_at=timezone.now() if delivered else None,
        )
    hook_a, _ = make_webhook(maintainer_a, agency_a, "http://127.0.0.1:9/a",
                             ["model_version.status_changed"])
    hook_b, _ = make_webhook(maintainer_b, agency_b, "http://127.0.0.1:9/b",
                             ["model_version.status_changed"])
    for n, (hook, status) in enumerate([(hook_a, DeliveryStatus.FAILED),
                                        (hook_a, DeliveryStatus.FAILED),
                                        (hook_a, DeliveryStatus.DELIVERED),
                                        (hook_b, DeliveryStatus.PENDING)]):
        WebhookDelivery.objects.create(
            webhook=hook, event_id=f"evt-{n}",
            event_type="model_version.status_changed", payload={}, status=status,
        )

    samples = _scrape(client)

    owed = {s.labels["state"]: s.value for s in samples["civitas_mlflow_outbox"]}
    assert owed == {"undelivered": 3, "failing": 1}
    failed = {s.labels["agency"]: s.value
              for s in samples["civitas_webhook_deliveries_failed"]}
    assert failed == {agency_a.slug: 2, agency_b.slug: 0}

