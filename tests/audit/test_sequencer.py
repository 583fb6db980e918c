"""Appends under contention: queued events and the post-commit sequencer.

Real PostgreSQL, committed transactions, other writers on their own
connections (threads): every event chained exactly once, in a chain that
verifies, never before its transaction commits.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from audit import sequencer
from audit import services as audit
from audit.models import AuditChainHead, AuditEvent, AuditPendingEvent
from tests.audit.test_audit import committed_audit_rows  # noqa: F401 -- a fixture
from workers import tasks

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("committed_audit_rows"),
]


@pytest.fixture(autouse=True)
def _chain_head():
    """The head row, committed: the runner's flush removed it, and a writer
    recreating it would make the others wait on its insert, not skip it."""
    with transaction.atomic():
        sequencer.lock_head()


def _record(name: str, *, action: str | None = None, **kwargs) -> AuditEvent:
    return audit.record(
        actor=None,
        action=action or f"test.{name}",
        object_type="test.item",
        object_id=name,
        payload={"name": name},
        **kwargs,
    )


def _chain() -> list[str]:
    return list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))


class Holder(threading.Thread):
    """Another writer: appends inline, then holds the chain head until released."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.locked, self.release = threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                assert _record("held").seq is not None
                self.locked.set()
                self.release.wait(60)
        except BaseException as error:
            self.error = error
        finally:
            self.locked.set()
            connection.close()

    def __enter__(self) -> Holder:
        self.start()
        assert self.locked.wait(60) and self.error is None
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def finish(self) -> None:
        self.release.set()
        self.join(60)
        assert self.error is None


def test_a_queued_event_enters_the_chain_only_after_its_transaction_commits():
    with transaction.atomic():
        with Holder():
            queued = _record("queued")
            assert (queued.seq, queued.hash, queued.pk) == (None, None, None)
            assert AuditPendingEvent.objects.count() == 1
        # The holder committed; this transaction is still open.
        assert _chain() == ["test.held"]
        assert AuditPendingEvent.objects.count() == 1

    # Its own pass ran on commit.
    assert _chain() == ["test.held", "test.queued"]
    assert not AuditPendingEvent.objects.exists()
    held, chained = AuditEvent.objects.order_by("seq")
    assert (chained.seq, chained.prev_hash) == (2, held.hash)
    assert chained.created_at >= held.created_at
    assert chained.payload_data == {"name": "queued"}
    report = audit.verify_chain()
    assert report.ok and report.events == 2, report.reason


class Rollback(Exception):
    pass


def test_a_queued_event_whose_transaction_rolls_back_leaves_nothing():
    with Holder(), pytest.raises(Rollback), transaction.atomic():
        assert _record("rolled_back").seq is None
        raise Rollback

    assert audit.sequence_pending() == 0
    assert _chain() == ["test.held"]
    assert not AuditPendingEvent.objects.exists()


def test_a_transaction_that_queued_keeps_queueing_so_its_events_keep_order():
    with transaction.atomic():
        with Holder():
            assert _record("first").seq is None
        # The head is free now, but "second" must not pass "first".
        second = _record("second")
        assert second.seq is None

    assert _chain() == ["test.held", "test.first", "test.second"]
    assert audit.verify_chain().ok


def test_wait_chains_what_the_transaction_queued_then_the_event_inline():
    with transaction.atomic():
        holder = Holder().__enter__()
        assert _record("first").seq is None
        holder.finish()
        second = _record("second", wait=True)
        assert (second.seq, second.hash) == (3, AuditEvent.objects.get(seq=3).hash)
        assert not AuditPendingEvent.objects.exists()

    assert _chain() == ["test.held", "test.first", "test.second"]
    assert audit.verify_chain().ok


def test_a_queued_event_whose_writer_died_is_chained_by_the_sweep():
    with Holder(), transaction.atomic():
        _record("orphan")
        # The writer process dies between its COMMIT and its own pass: the
        # on-commit callback never runs.
        connection.run_on_commit.clear()

    assert _chain() == ["test.held"]
    assert AuditPendingEvent.objects.count() == 1
    assert tasks.audit_sequence_sweep() == 1
    assert _chain() == ["test.held", "test.orphan"]
    assert tasks.audit_sequence_sweep() == 0
    assert audit.verify_chain().ok


def test_an_inline_append_chains_the_committed_queued_events_before_its_own():
    with Holder(), transaction.atomic():
        _record("orphan")
        connection.run_on_commit.clear()  # as if its writer died

    with transaction.atomic():
        latest = _record("latest")

    assert latest.seq == 3
    assert _chain() == ["test.held", "test.orphan", "test.latest"]
    assert not AuditPendingEvent.objects.exists()
    assert audit.verify_chain().ok


def test_checkpoint_and_verification_chain_leftovers_first():
    with Holder(), transaction.atomic():
        _record("orphan")
        connection.run_on_commit.clear()

    checkpoint = audit.checkpoint_create()

    assert checkpoint.seq == 2
    assert _chain() == ["test.held", "test.orphan"]


WRITERS, EACH = 4, 40


def _writer(index: int, returned: list, errors: list, start: threading.Barrier):
    try:
        start.wait(60)
        for n in range(EACH):
            with transaction.atomic():
                event = _record(f"w{index}-{n}", action="test.appended")
                time.sleep(0.003)  # work after recording: the head is held
            returned.append(event.seq)
    except BaseException as error:
        errors.append(error)
    finally:
        connection.close()


def test_four_concurrent_writers_chain_every_event_exactly_once():
    returned: list = []
    errors: list = []
    start = threading.Barrier(WRITERS)
    threads = [
        threading.Thread(target=_writer, args=(i, returned, errors, start))
        for i in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    assert errors == []
    names = list(AuditEvent.objects.order_by("seq").values_list("object_id", flat=True))
    expected = {f"w{i}-{n}" for i in range(WRITERS) for n in range(EACH)}
    assert len(names) == len(expected) and set(names) == expected
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, WRITERS * EACH + 1))
    assert not AuditPendingEvent.objects.exists()
    # Both paths ran: some appends were inline, some queued.
    assert None in returned and any(seq is not None for seq in returned)
    # Each writer's own events are in the order it recorded them.
    for i in range(WRITERS):
        mine = [name for name in names if name.startswith(f"w{i}-")]
        assert mine == [f"w{i}-{n}" for n in range(EACH)]
    report = audit.verify_chain()
    assert report.ok and report.events == WRITERS * EACH, report.reason
    # The checkpoint re-verifies the chain and the stored Merkle tree.
    assert audit.checkpoint_create().seq == WRITERS * EACH


class PassHolder(threading.Thread):
    """Another pass: holds the sequencer's advisory lock until released."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.locked, self.release = threading.Event(), threading.Event()

    def run(self) -> None:
        try:
            with transaction.atomic():
                assert sequencer._lock_sequencer(wait=True)[0]
                self.locked.set()
                self.release.wait(60)
        finally:
            self.locked.set()
            connection.close()


def test_a_writers_pass_leaves_its_event_to_the_pass_holding_the_lock():
    passing = PassHolder()
    passing.start()
    assert passing.locked.wait(60)
    try:
        with Holder(), transaction.atomic():
            assert _record("queued").seq is None
        # Its own pass ran on commit: one probe, no transaction, nothing chained.
        assert not sequencer._lock_free()
        assert audit.sequence_pending(wait=False) == 0
        assert AuditPendingEvent.objects.count() == 1
    finally:
        passing.release.set()
        passing.join(60)

    # The lock is free again: the next pass (the holder's look after its
    # release, in service) chains it.
    assert sequencer._lock_free()
    assert audit.sequence_pending(wait=False) == 1
    assert _chain() == ["test.held", "test.queued"]
    assert audit.verify_chain().ok


def test_a_missing_head_is_told_from_a_locked_one_and_recreated():
    with transaction.atomic():
        _record("first")
    with transaction.atomic():
        second = _record("second")
    AuditChainHead.objects.filter(pk=1).delete()

    with transaction.atomic():
        head = sequencer.head_try_lock()
        assert (head.seq, head.hash) == (2, second.hash)
        third = _record("third")

    assert third.seq == 3
    # record() itself: the statement that would queue the event queues
    # nothing for a missing head, which is recreated and the event inline.
    AuditChainHead.objects.filter(pk=1).delete()
    with transaction.atomic():
        fourth = _record("fourth")
    assert fourth.seq == 4
    assert not AuditPendingEvent.objects.exists()
    assert _chain() == ["test.first", "test.second", "test.third", "test.fourth"]
    assert audit.verify_chain().ok
