"""When checkpoints are signed: at start-up, every N events or M minutes, on export.

The first signed checkpoint used to come an hour after start-up, so until then
an export proved nothing beyond itself (issue 8, defect 2).
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from kombu import Connection

from audit import services as audit
from audit.models import AuditCheckpoint
from tests.audit.test_audit import (  # noqa: F401  (fixtures)
    _platform_key,
    committed_audit_rows,
    record_n,
    signing_key_file,
)
from tests.conftest import celery_worker, database_url, process_env, wait_until


def _checkpoint_seqs() -> list[int]:
    return list(AuditCheckpoint.objects.values_list("seq", flat=True))


@pytest.mark.django_db
def test_a_checkpoint_is_due_first_then_every_n_events_or_m_minutes(settings):
    settings.AUDIT_CHECKPOINT_EVENTS = 3
    settings.AUDIT_CHECKPOINT_MINUTES = 60
    assert audit.checkpoint_if_due() is None  # an empty chain

    record_n(2)
    assert audit.checkpoint_if_due().seq == 2  # nothing signed yet: due at once
    record_n(2)
    assert audit.checkpoint_if_due() is None  # 2 unsigned < 3, and not an hour
    record_n(1)
    assert audit.checkpoint_if_due().seq == 5  # 3 unsigned
    record_n(1)
    settings.AUDIT_CHECKPOINT_MINUTES = 0
    assert audit.checkpoint_if_due().seq == 6  # the time has passed
    assert audit.checkpoint_if_due() is None  # nothing unsigned

    assert _checkpoint_seqs() == [2, 5, 6]


@pytest.mark.django_db
def test_an_append_crossing_the_event_count_queues_a_checkpoint_on_commit(
    settings, django_capture_on_commit_callbacks
):
    settings.AUDIT_CHECKPOINT_EVENTS = 3
    queued = []
    for _ in range(7):
        with django_capture_on_commit_callbacks() as callbacks:
            record_n(1)
        queued.append([c for c in callbacks if c is audit._queue_checkpoint])

    assert [len(q) for q in queued] == [0, 0, 1, 0, 0, 1, 0]


@pytest.mark.django_db
def test_the_export_ends_with_a_checkpoint_over_its_last_event(api_reviewer):
    record_n(3)

    response = api_reviewer.get("/api/v1/audit/export/")

    lines = [json.loads(x) for x in b"".join(response.streaming_content).splitlines()]
    checkpoints = [line["seq"] for line in lines if line["type"] == "checkpoint"]
    assert lines[0]["up_to_seq"] == 3
    assert checkpoints[-1] == 3
    assert lines[-1] == {"type": "end", "events": 3, "up_to_seq": 3}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("committed_audit_rows")
def test_two_signers_at_once_sign_one_checkpoint():
    record_n(3)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def sign():
        try:
            barrier.wait(timeout=10)
            checkpoint = audit.checkpoint_create()
            results.append(checkpoint.seq if checkpoint else None)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sign) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(results, key=str) == [3, None]
    assert _checkpoint_seqs() == [3]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("committed_audit_rows")
def test_a_starting_worker_signs_unsigned_events_and_every_n_events(settings):
    record_n(3)
    queue = f"civitas-test-audit-{uuid.uuid4().hex[:8]}"
    default = django_settings.CELERY_TASK_DEFAULT_QUEUE
    # An append that crosses the event count queues its checkpoint there.
    housekeeping = django_settings.CELERY_HOUSEKEEPING_QUEUE
    env = process_env(
        DATABASE_URL=database_url(),
        CIVITAS_SIGNING_KEY_FILE=settings.CIVITAS_SIGNING_KEY_FILE,
    )

    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        # Nothing left over from other tests may sign in the worker's place.
        conn.default_channel.queue_purge(default)
        conn.default_channel.queue_purge(housekeeping)
    with celery_worker(env, f"{queue},{default},{housekeeping}"):
        # Nothing is sent: the worker queues the start-up checkpoint itself.
        wait_until(
            lambda: _checkpoint_seqs() == [3],
            timeout=90,
            what="the start-up checkpoint",
        )
        settings.AUDIT_CHECKPOINT_EVENTS = 5
        with transaction.atomic():
            record_n(2)  # seq 5: crosses the event count, queued on commit
        wait_until(
            lambda: _checkpoint_seqs() == [3, 5],
            timeout=90,
            what="the checkpoint queued when the chain reached 5 events",
        )

    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_delete(queue)
