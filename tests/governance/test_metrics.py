"""GET /metrics: Prometheus text that parses, matches the database, not public."""

from __future__ import annotations

import pytest
from django.db.models import Count
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from audit import services as audit_services
from audit.models import AuditChainHead, AuditEvent
from governance.models import EvaluationRun, RunStatus
from governance.services import evaluations as evaluation_services

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-0123456789abcdef"


def _scrape(client, token: str = TOKEN) -> dict[str, list]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(response.content.decode())
    return {family.name: family.samples for family in families}


@pytest.fixture
def scrape_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def test_metrics_is_hidden_from_the_public(client, settings, scrape_token, member_a):
    assert client.get("/metrics").status_code == 404
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    client.force_login(member_a)  # an agency member, not staff
    assert client.get("/metrics").status_code == 404
    settings.METRICS_TOKEN = ""  # no token configured: no bearer is accepted
    refused = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert refused.status_code == 401


def test_staff_may_read_metrics_without_the_token(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"civitas_evaluations" in response.content


def test_metrics_match_the_database(
    client, scrape_token, released_lm_version, small_suite, member_a, settings
):
    runs = [
        evaluation_services.evaluation_request(
            actor=member_a, model_version=released_lm_version, suite=small_suite,
            enqueue=False,
        )
        for _ in range(4)
    ]
    # Set-up only: two runs ended failed with their codes.
    EvaluationRun.objects.filter(pk=runs[0].pk).update(
        status=RunStatus.FAILED, failure_code="worker_lost")
    EvaluationRun.objects.filter(pk=runs[1].pk).update(
        status=RunStatus.FAILED, failure_code="timeout")
    audit_services.checkpoint_create()
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with Connection(settings.CELERY_BROKER_URL) as conn:
        waiting = conn.SimpleQueue(queue)
        waiting.clear()
        for n in range(3):
            waiting.put({"n": n})
        try:
            samples = _scrape(client)
        finally:
            waiting.clear()
            waiting.close()

    by_status = {s.labels["status"]: s.value for s in samples["civitas_evaluations"]}
    expected = dict(EvaluationRun.objects.values_list("status")
                    .annotate(n=Count("pk")).values_list("status", "n"))
    assert by_status == {status: expected.get(status, 0) for status in RunStatus.values}
    assert by_status["queued"] == 2 and by_status["failed"] == 2
    failed = {s.labels["failure_code"]: s.value
              for s in samples["civitas_evaluations_failed"]}
    assert failed == {"worker_lost": 1, "timeout": 1}
    lengths = {s.labels["queue"]: s.value
               for s in samples["civitas_celery_queue_length"]}
    assert lengths[queue] == 3
    chain = samples["civitas_audit_chain_length"][0].value
    assert chain == AuditChainHead.objects.get().seq == AuditEvent.objects.count()
    assert chain >= 4  # at least one event per run requested
    assert 0 <= samples["civitas_audit_seconds_since_checkpoint"][0].value < 60
    assert samples["civitas_audit_unsigned_events"][0].value == 0
    assert "civitas_metrics_collect_errors" not in samples or not samples[
        "civitas_metrics_collect_errors"]


def test_a_broken_gauge_is_counted_and_the_rest_still_answer(client, scrape_token):
    from config import metrics

    def broken():
        raise ConnectionError("exporter at 10.0.0.9 down")

    metrics.register_gauge("civitas_test_broken", "a gauge that fails", broken)
    try:
        samples = _scrape(client)
    finally:
        del metrics.GAUGES["civitas_test_broken"]
    errors = {s.labels["gauge"]: s.value
              for s in samples["civitas_metrics_collect_errors"]}
    assert errors == {"civitas_test_broken": 1}
    assert "civitas_evaluations" in samples
