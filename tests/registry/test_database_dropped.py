"""PostgreSQL connection dropped during a request: a clean 503, nothing half-written.

The request registers a model version: it inserts the version, then records
its audit event. The test holds the audit chain's head (so the event is
queued for the sequencer, audit/sequencer.py) and a lock on the queue's table
that stops the insert, from another connection. While the request waits there
inside its transaction, the test terminates its backend
(``pg_terminate_backend``), as a database restart or a failover does.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from audit.models import AuditEvent, AuditPendingEvent
from registry.models import ModelVersion
from tests.registry.api_catalogue import build_catalogue

pytestmark = pytest.mark.django_db(transaction=True)

WAITING = (
    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND datname = current_database() AND pid <> pg_backend_pid()"
)


def _waiting_backend(cursor, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(WAITING)
        row = cursor.fetchone()
        if row:
            return row[0]
        time.sleep(0.05)
    pytest.fail("the request never waited on a lock in its transaction")


def test_a_dropped_connection_answers_503_and_writes_nothing(
    api_a, agency_a, agency_b, member_a, member_b
):
    cat = build_catalogue(agency_a, agency_b, member_a, member_b)
    events_before = AuditEvent.objects.count()
    body = {"model": cat.model_a.pk, "version": "1.1.0", "licence": "Apache-2.0"}
    answers = {}
    _ensure_chain_head()
    holder = connections.create_connection("default")
    holder.connect()
    holder.set_autocommit(False)
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT seq FROM governance_auditchainhead FOR UPDATE")
            table = AuditPendingEvent._meta.db_table
            cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")
            request = threading.Thread(target=lambda: answers.update(
                response=api_a.post("/api/v1/model-versions/", body, format="json")
            ))
            request.start()
            pid = _waiting_backend(cursor)
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            request.join(timeout=30)
    finally:
        holder.rollback()
        holder.close()

    response = answers["response"]
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert set(response.json()) == {"code", "message"}
    assert int(response["Retry-After"]) > 0
    # Nothing half-written: no version, no audit event.
    assert not ModelVersion.objects.filter(model=cat.model_a, version="1.1.0").exists()
    assert AuditEvent.objects.count() == events_before
    assert not AuditPendingEvent.objects.exists()

    # The next request gets a working connection and registers the version.
    again = api_a.post("/api/v1/model-versions/", body, format="json")
    assert again.status_code == 201, again.content


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
