"""Appends under contention: the pending queue and the post-commit sequencer.

``audit.services.record`` chains an event inline when it takes the chain
head's lock at once (``SELECT ... FOR UPDATE SKIP LOCKED``). When another
writer holds the lock, waiting for it would serialise every append on that
writer's commit (its WAL flush), so the event's fields go to
``AuditPendingEvent`` in the caller's transaction instead, and the writer runs
``sequence_pending`` once that transaction has committed. The sequencer chains
every committed pending event in one transaction per batch: one WAL flush for
many events, which is where concurrent appends get their throughput.

Why every committed pending event is chained (the race argument). The
sequencer takes a *waiting* transaction-level advisory lock before it reads
the queue, so passes run one at a time and each reads the queue after the
previous pass committed. A writer whose event went to the queue commits, then
starts its own pass: that pass reads the queue in a snapshot taken after the
writer's commit, so it either finds the writer's event or the event was
already chained by an earlier pass (whose deletion it sees). No pass relies
on another to come back for it, so no try-lock window can strand an event.
An event is left only when its writer dies between its commit and its pass,
or the pass fails: ``civitas.audit_sequence_sweep`` (beat, every minute),
``verify_chain`` and ``checkpoint_create`` chain such leftovers.

Why no event forks the chain or is chained twice: every pass holds the chain
head's row lock while it chains, exactly as an inline append does, and deletes
the pending rows it chained in the same transaction; the DELETE must remove
every row it read, or the pass rolls back.

An empty pass assigns no transaction id (advisory lock and SELECT only), so
its commit costs no WAL flush.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit import tree
from audit.models import AuditChainHead, AuditEvent, AuditMerkleNode, AuditPendingEvent
from audit.signals import event_recorded, is_announced
from audit.verify import GENESIS_HASH, event_hash, parse_json
from config.celery import app as celery_app

__all__ = [
    "CHECKPOINT_TASK",
    "announce",
    "chain_event",
    "chain_pending",
    "head_try_lock",
    "is_queueing",
    "lock_head",
    "pending_add",
    "queue_checkpoint",
    "sequence_pending",
]

logger = logging.getLogger(__name__)

CHECKPOINT_TASK = "civitas.audit_checkpoint"
# Any constant shared by every process: the advisory lock serialising passes.
_SEQUENCER_LOCK = 0x4349564954415302
# Pending events chained per transaction (one WAL flush each).
SEQUENCE_BATCH = 1000


def lock_head() -> AuditChainHead:
    """Lock and return the chain head, recreating it from the last event if absent.

    Waits for the writer holding it. The row goes missing only when a test
    runner empties every table; the chain then resumes from whatever events
    remain.
    """
    try:
        return AuditChainHead.objects.select_for_update().get(pk=1)
    except AuditChainHead.DoesNotExist:
        pass
    last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    try:
        with transaction.atomic():
            AuditChainHead.objects.create(
                pk=1,
                seq=last["seq"] if last else 0,
                hash=last["hash"] if last else GENESIS_HASH,
            )
    except IntegrityError:
        pass  # Another writer recreated it first; its row is locked below.
    return AuditChainHead.objects.select_for_update().get(pk=1)


def head_try_lock() -> AuditChainHead | None:
    """The chain head, locked, if no other transaction holds it; else None.

    ``FOR UPDATE SKIP LOCKED``: no wait, no error, so no savepoint is needed.
    A transaction that holds the lock already gets the row again. Waits
    (``lock_head``) where the database cannot skip locked rows (SQLite, which
    serialises writers itself) or when the row is missing.
    """
    if not connection.features.has_select_for_update_skip_locked:
        return lock_head()
    head = AuditChainHead.objects.select_for_update(skip_locked=True).filter(pk=1)
    found = head.first()
    if found is None and not AuditChainHead.objects.filter(pk=1).exists():
        return lock_head()
    return found


class _Sequence:
    """The on-commit callback of a transaction that queued events.

    ``last_id`` is the transaction's newest queued row: once that one is
    chained, all of the transaction's are (passes go in id order).
    """

    def __init__(self, last_id: int) -> None:
        self.last_id = last_id

    def __call__(self) -> None:
        try:
            sequence_pending(own_id=self.last_id)
        except Exception:  # committed already: the sweep chains what is left
            logger.warning("could not sequence pending audit events", exc_info=True)


def _sequence_callback() -> _Sequence | None:
    for item in connection.run_on_commit:
        if isinstance(item[1], _Sequence):
            return item[1]
    return None


def is_queueing() -> bool:
    """Whether the current transaction has queued events already.

    Its later events are queued too, so a transaction's events stay in the
    order it recorded them. Read from Django's on-commit list, which a rolled
    back savepoint or transaction empties with the rows it wrote.
    """
    return _sequence_callback() is not None


def pending_add(
    *, fields: dict[str, Any], actor, agency, payload_text: str
) -> AuditEvent:
    """Queue one event in the caller's transaction; sequenced after it commits.

    Returns the unsaved, unchained AuditEvent (seq, prev_hash, hash None;
    created_at the recording time, replaced when it is chained).
    """
    now = timezone.now()
    row = AuditPendingEvent.objects.create(
        recorded_at=now, actor=actor, agency=agency, payload=payload_text, **fields
    )
    callback = _sequence_callback()
    if callback is None:
        transaction.on_commit(_Sequence(row.id))
    else:
        callback.last_id = row.id
    return AuditEvent(
        created_at=now,
        actor=actor,
        agency=agency,
        payload=payload_text,
        prev_hash=None,
        hash=None,
        **fields,
    )


def chain_event(head_seq: int, head_hash: str, **values: Any) -> AuditEvent:
    """The AuditEvent following (``head_seq``, ``head_hash``), hashed, unsaved.

    ``values`` are the event's stored fields but seq, prev_hash and hash;
    ``payload_value`` (the canonical payload) is hashed, ``payload`` stored.
    """
    payload_value = values.pop("payload_value")
    event = AuditEvent(seq=head_seq + 1, prev_hash=head_hash, **values)
    event.hash = event_hash(
        {
            "seq": event.seq,
            "created_at": event.created_at,
            "actor_label": event.actor_label,
            "agency_slug": event.agency_slug,
            "action": event.action,
            "object_type": event.object_type,
            "object_id": event.object_id,
            "payload": payload_value,
            "prev_hash": head_hash,
        }
    )
    return event


def _lock_sequencer() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SEQUENCER_LOCK])


def _chain_batch(head: AuditChainHead, pending: list[AuditPendingEvent]) -> list:
    """Append ``pending`` after ``head`` (locked): events, nodes, head; in id order."""
    created_at = timezone.now()  # under the head's lock: time never runs back
    nodes, bulk = [], tree.BulkNodes(head)
    events: list[AuditEvent] = []
    seq, last = head.seq, head.hash
    for row in pending:
        event = chain_event(
            seq,
            last,
            created_at=created_at,
            actor_id=row.actor_id,
            actor_label=row.actor_label,
            agency_id=row.agency_id,
            agency_slug=row.agency_slug,
            action=row.action,
            object_type=row.object_type,
            object_id=row.object_id,
            payload=row.payload,
            # What the verifier hashes: the stored text, parsed.
            payload_value=parse_json(row.payload),
        )
        nodes.extend(
            AuditMerkleNode(id=key, level=level, index=index, hash=value)
            for key, level, index, value in bulk.add(event.hash)
        )
        events.append(event)
        seq, last = event.seq, event.hash
    head.seq, head.hash, head.frontier = seq, last, bulk.edge
    _write_batch(events, nodes, [row.id for row in pending], head)
    return events


def _write_batch(events: list, nodes: list, pending_ids: list, head) -> None:
    """Events, nodes, head and the queue's deletion in one statement (one trip).

    Raises RuntimeError, dooming the pass, unless the DELETE removed every
    row chained: a row chained twice would fork nothing (the head's lock and
    the unique prev_hash forbid it) but is refused before that.
    """
    fields = AuditEvent._meta.concrete_fields
    row = f"({', '.join(['%s'] * len(fields))})"
    node_rows = ", ".join(["(%s, %s, %s, %s)"] * len(nodes))
    sql = (
        f"WITH e AS (INSERT INTO {AuditEvent._meta.db_table} "
        f"({', '.join(f.column for f in fields)}) "
        f"VALUES {', '.join([row] * len(events))}), "
        f"n AS (INSERT INTO {AuditMerkleNode._meta.db_table} "
        f'(id, level, "index", hash) VALUES {node_rows}), '
        f"d AS (DELETE FROM {AuditPendingEvent._meta.db_table} "
        "WHERE id = ANY(%s) RETURNING 1) "
        f"UPDATE {AuditChainHead._meta.db_table} "
        "SET seq = %s, hash = %s, frontier = %s WHERE id = 1 "
        "RETURNING (SELECT count(*) FROM d)"
    )
    params = [
        f.get_db_prep_save(getattr(event, f.attname), connection)
        for event in events
        for f in fields
    ]
    params += [v for n in nodes for v in (n.id, n.level, n.index, n.hash)]
    params += [pending_ids, head.seq, head.hash, head.frontier]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (deleted,) = cursor.fetchone()
    if deleted != len(pending_ids):
        raise RuntimeError("pending audit events were chained by another pass")


def sequence_pending(*, batch: int = SEQUENCE_BATCH, own_id: int | None = None) -> int:
    """Chain every committed pending event, oldest id first; how many it chained.

    One transaction per ``batch`` events, each holding the sequencer's
    advisory lock and then the chain head's lock. With ``own_id`` (a
    writer's pass) it stops once that row is chained, by itself or another
    pass: the other rows are their own writers' to chain. Events asked for
    are announced, and a checkpoint queued when a batch crosses a multiple
    of ``AUDIT_CHECKPOINT_EVENTS``, once their batch has committed. Does
    nothing but on PostgreSQL (SQLite never queues). Raises the database's
    errors; a failed batch leaves its events pending.
    """
    if connection.vendor != "postgresql":
        return 0
    waiting = AuditPendingEvent.objects.all()
    if own_id is not None:
        waiting = waiting.filter(id=own_id)
        if not waiting.exists():  # chained by a pass that ran meanwhile
            return 0
    chained = 0
    while True:
        with transaction.atomic():
            _lock_sequencer()
            # Read after the lock, so after every earlier pass committed; and
            # before the head is locked: locking a row takes a transaction id,
            # whose commit would cost an empty pass a WAL flush.
            if not waiting.exists():
                return chained
            events = chain_pending(lock_head(), limit=batch)
        chained += len(events)


def chain_pending(head: AuditChainHead, *, limit: int | None = None) -> list:
    """Chain the pending events this transaction sees after ``head`` (locked).

    Read after the head's lock is taken, so in a snapshot that sees every
    pass committed before; ``head`` is moved forward in memory too. Announces
    and checkpoint queueing run when the transaction commits.
    """
    pending = list(AuditPendingEvent.objects.order_by("id")[:limit])
    if not pending:
        return []
    events = _chain_batch(head, pending)
    transaction.on_commit(lambda: _after_chained(events))
    return events


def _after_chained(events: list[AuditEvent]) -> None:
    every = max(settings.AUDIT_CHECKPOINT_EVENTS, 1)
    for event in events:
        if is_announced(event.action, event.payload_data):
            announce(event)
    if events[-1].seq // every > (events[0].seq - 1) // every:
        queue_checkpoint()


def announce(event: AuditEvent) -> None:
    """Tell the receivers of ``event_recorded``; a failing receiver is only logged."""
    for receiver, result in event_recorded.send_robust(sender=AuditEvent, event=event):
        if isinstance(result, Exception):
            logger.warning(
                "a receiver of audit event %s failed: %r",
                event.seq,
                receiver,
                exc_info=result,
            )


def queue_checkpoint() -> None:
    """Queue a checkpoint now; if the broker is down, beat's next tick signs it."""
    try:
        celery_app.send_task(CHECKPOINT_TASK, kwargs={"when": "now"}, expires=3600)
    except Exception:  # the append is committed; never fail the caller for this
        logger.warning("could not queue an audit checkpoint", exc_info=True)
