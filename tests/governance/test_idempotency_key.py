"""The Idempotency-Key header: a retried POST runs once (one version, one run)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import EvaluationRun
from idempotency.models import IdempotencyKey
from registry.models import ModelVersion
from tests.registry.api_catalogue import build_catalogue
from tests.registry.conftest import token_client

API = "/api/v1"


@pytest.fixture
def cat(agency_a, agency_b, member_a, member_b):
    return build_catalogue(agency_a, agency_b, member_a, member_b)


def _version(api, cat, key: str, version: str = "1.1.0"):
    body = {"model": cat.model_a.pk, "version": version, "licence": "Apache-2.0"}
    return api.post(f"{API}/model-versions/", body, format="json",
                    HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
def test_a_retried_version_registration_is_answered_from_the_first(api_a, cat):
    first = _version(api_a, cat, "k-1")
    retry = _version(api_a, cat, "k-1")

    assert first.status_code == 201, first.content
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert retry["Idempotency-Replayed"] == "true"
    assert "Idempotency-Replayed" not in first
    assert ModelVersion.objects.filter(model=cat.model_a, version="1.1.0").count() == 1
    created = AuditEvent.objects.filter(
        object_id=str(first.json()["id"]), action="model_version.created"
    )
    assert created.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422(api_a, cat):
    assert _version(api_a, cat, "k-2").status_code == 201

    other = _version(api_a, cat, "k-2", version="1.2.0")

    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert not ModelVersion.objects.filter(version="1.2.0").exists()


@pytest.mark.django_db
def test_keys_are_per_user(api_a, cat, maintainer_a):
    assert _version(api_a, cat, "shared").status_code == 201

    # Another person of the agency sending the same key runs their own request.
    other = _version(token_client(maintainer_a), cat, "shared")

    assert other.status_code == 409  # the version exists: it really ran
    assert other.json()["fields"]["version"][0]["code"] == "unique"


@pytest.mark.django_db
def test_an_invalid_key_is_400(api_a, cat):
    response = _version(api_a, cat, "x" * 300)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_invalid"


def _evaluate(api, version, key: str):
    return api.post(f"{API}/model-versions/{version.pk}/evaluations/",
                    {"suite": "small"}, format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
def test_a_retried_evaluation_request_queues_one_run(
    released_lm_version, small_suite, member_a, settings
):
    api = token_client(member_a)
    first = _evaluate(api, released_lm_version, "eval-1")
    retry = _evaluate(api, released_lm_version, "eval-1")

    assert first.status_code == 202, first.content
    assert retry.status_code == 202
    assert retry.json()["id"] == first.json()["id"]
    assert EvaluationRun.objects.filter(model_version=released_lm_version).count() == 1

    # Once the key has expired, the same request is a new one.
    IdempotencyKey.objects.filter(key="eval-1").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    later = _evaluate(api, released_lm_version, "eval-1")
    assert later.status_code == 202
    assert later.json()["id"] != first.json()["id"]
    assert EvaluationRun.objects.filter(model_version=released_lm_version).count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_do_not_both_run(api_a, cat):
    """The first request is held inside its transaction (the audit chain head is
    locked by another connection); its duplicate, sent meanwhile, is refused
    with 409 and runs nothing. Then the first completes: one version."""
    _ensure_chain_head()
    holder = connections.create_connection("default")
    holder.connect()
    holder.set_autocommit(False)
    results: dict[str, object] = {}
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT seq FROM governance_auditchainhead FOR UPDATE")
        first = threading.Thread(
            target=lambda: results.update(first=_version(api_a, cat, "race"))
        )
        first.start()
        _wait_for_lock_waiter(holder)
        results["second"] = _version(api_a, cat, "race")
    finally:
        holder.rollback()
        holder.close()
    first.join(timeout=60)

    assert results["second"].status_code == 409
    assert results["second"].json()["code"] == "idempotency_key_in_use"
    assert results["first"].status_code == 201
    assert ModelVersion.objects.filter(model=cat.model_a, version="1.1.0").count() == 1
    assert _version(api_a, cat, "race").json() == results["first"].json()


def _wait_for_lock_waiter(holder, timeout: float = 30.0) -> None:
    """Until another backend waits for a lock (the first request, inside audit)."""
    import time

    deadline = time.monotonic() + timeout
    with holder.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    pytest.fail("the first request never reached the audit chain's lock")


def _ensure_chain_head() -> None:
    """Set-up: the chain head row exists (a flushed test database has none)."""
    from audit.models import AuditChainHead
    from audit.verify import GENESIS_HASH

    last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    AuditChainHead.objects.get_or_create(
        pk=1,
        defaults={"seq": last["seq"] if last else 0,
                  "hash": last["hash"] if last else GENESIS_HASH},
    )


@pytest.mark.django_db
def test_beat_purges_expired_keys_hourly(api_a, cat, settings):
    from workers.tasks import idempotency_purge

    assert _version(api_a, cat, "old").status_code == 201
    assert _version(api_a, cat, "fresh", version="1.2.0").status_code == 201
    IdempotencyKey.objects.filter(key="old").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert idempotency_purge() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]
    entry = settings.CELERY_BEAT_SCHEDULE["idempotency-purge"]
    assert entry["task"] == "civitas.idempotency_purge"
    assert entry["schedule"] == timedelta(hours=1)
