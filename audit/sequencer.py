"""Appends under contention: the pending queue and the post-commit sequencer.

``audit.services.record`` chains an event inline when it takes the chain
head's lock at once (``SELECT ... FOR UPDATE SKIP LOCKED``). When another
writer holds the lock, waiting for it would serialise every append on that
writer's commit (its WAL flush), so the event's fields go to
``AuditPendingEvent`` in the caller's transaction instead, and the writer runs
``sequence_pending`` once that transaction has committed. A pass chains every
committed pending event in one transaction per batch: one WAL flush for many
events, which is where concurrent appends get their throughput. A writer
that does get the head chains the pending events it sees before its own, in
its transaction, so no append overtakes one already committed: a process's
events, and events one after the other in time, keep their order.

Why every committed pending event is chained (the race argument). A writer's
pass takes the sequencer's advisory lock *without waiting*, so writers never
queue behind a pass. Each pass, after committing and so releasing the lock,
looks at the queue again and goes on while it holds rows. Take an event
committed at t1 whose writer then fails the try-lock at t2 > t1: some pass P
held the lock at t2, and releases it at t3 > t2; P's look after t3 sees the
event (or sees it chained). If P then fails the try-lock itself, the pass
that holds it at that moment (after t1) inherits the same duty; the duty
ends with a pass that takes the lock and reads the queue after t1, which
chains the event. A lock-holding pass that found the queue empty also
looks again after releasing, which closes the window where it read the
queue just before t1. A writer first probes the lock in one statement
outside any transaction (``_lock_free``): a probe that fails is a failed
try-lock as above; one that succeeds held the lock for that statement only,
and its writer then runs a whole pass, whose look after release serves
whoever failed against the probe. An event is left only when its writer dies between
its commit and its pass, or a pass fails: ``civitas.audit_sequence_sweep``
(beat, every minute), ``verify_chain`` and ``checkpoint_create`` chain such
leftovers, waiting for the lock.

Why no event forks the chain or is chained twice: every pass, and every
inline append, holds the chain head's row lock while it chains, reads the
queue only after taking it (so after the previous holder committed), and
deletes the pending rows it chained in the same transaction; the pass rolls
back unless its DELETE removed every row it chained.

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
    "pending_row",
    "queue_checkpoint",
    "queued",
    "sequence_pending",
]

logger = logging.getLogger(__name__)

CHECKPOINT_TASK = "civitas.audit_checkpoint"
# Any constant shared by every process: the advisory lock serialising passes.
_SEQUENCER_LOCK = 0x4349564954415302
# Pending events chained per transaction (one WAL flush each).
SEQUENCE_BATCH = 1000


_HEAD = AuditChainHead._meta.db_table
_PENDING = AuditPendingEvent._meta.db_table
# A pending row as ``_pending_rows`` reads it: the id, then the event's fields.
_PENDING_FIELDS = (
    "actor_id", "actor_label", "agency_id", "agency_slug", "action",
    "object_type", "object_id", "payload",
)  # fmt: skip
_EVENT_FIELDS = tuple(f.attname for f in AuditEvent._meta.concrete_fields)
_PENDING_INSERT = f"INSERT INTO {_PENDING} (recorded_at, {', '.join(_PENDING_FIELDS)})"
_PENDING_VALUES = ", ".join(["%s"] * (1 + len(_PENDING_FIELDS)))


def _head_of(row: tuple) -> AuditChainHead:
    """The head model from a (seq, hash, frontier) row."""
    return AuditChainHead.from_db(
        connection.alias, ["id", "seq", "hash", "frontier"], (1, *row)
    )


def lock_head() -> AuditChainHead:
    """Lock and return the chain head, recreating it from the last event if absent.

    Waits for the writer holding it. The row goes missing only when a test
    runner empties every table; the chain then resumes from whatever events
    remain.
    """
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT seq, hash, frontier FROM {_HEAD} WHERE id = 1{lock}")
        row = cursor.fetchone()
    if row is not None:
        return _head_of(row)
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


def head_try_lock(queue: dict | None = None) -> AuditChainHead | None:
    """The chain head, locked, if no other transaction holds it; else None.

    ``FOR UPDATE SKIP LOCKED``: no wait, no error, so no savepoint is needed;
    the same statement tells a locked row from a missing one and, given
    ``queue`` (a ``pending_row``), queues that event when another transaction
    holds the head: None then means queued (call ``queued``). A transaction
    that holds the lock already gets the row again. Waits (``lock_head``)
    where the database cannot skip locked rows (SQLite, which serialises
    writers itself) or when the row is missing.
    """
    if not connection.features.has_select_for_update_skip_locked:
        return lock_head()
    insert, params = "", []
    if queue is not None:
        insert = (
            f", q AS ({_PENDING_INSERT} SELECT {_PENDING_VALUES} "
            f"WHERE NOT EXISTS (SELECT FROM h) AND EXISTS (SELECT FROM {_HEAD} "
            "WHERE id = 1))"
        )
        params = _pending_params(queue)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH h AS (SELECT seq, hash, frontier FROM {_HEAD} WHERE id = 1 "
            f"FOR UPDATE SKIP LOCKED){insert} "
            f"SELECT h.seq, h.hash, h.frontier, EXISTS (SELECT FROM {_HEAD} "
            "WHERE id = 1) FROM (SELECT 1) AS one LEFT JOIN h ON true",
            params,
        )
        *row, exists = cursor.fetchone()
    if row[0] is not None:
        return _head_of(row)
    return None if exists else lock_head()


class _Sequence:
    """The on-commit callback of a transaction that queued events."""

    def __call__(self) -> None:
        try:
            sequence_pending(wait=False)
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


def pending_row(
    *, fields: dict[str, Any], actor, agency, payload_text: str
) -> dict[str, Any]:
    """An event's row for the queue (``head_try_lock``, ``pending_add``)."""
    return {
        "recorded_at": timezone.now(),
        **fields,
        "actor_id": actor.pk if actor is not None else None,
        "agency_id": agency.pk if agency is not None else None,
        "payload": payload_text,
    }


def _pending_params(row: dict[str, Any]) -> list:
    return [row["recorded_at"], *(row[name] for name in _PENDING_FIELDS)]


def pending_add(row: dict[str, Any]) -> None:
    """Queue ``row`` (a ``pending_row``) in the caller's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"{_PENDING_INSERT} VALUES ({_PENDING_VALUES})", _pending_params(row)
        )


def queued(row: dict[str, Any], *, actor, agency) -> AuditEvent:
    """After ``row`` was queued: sequence it once the transaction commits.

    Returns the unsaved, unchained AuditEvent (seq, prev_hash, hash None;
    created_at the recording time, replaced when it is chained).
    """
    if not is_queueing():
        transaction.on_commit(_Sequence())
    fields = {name: row[name] for name in _PENDING_FIELDS}
    del fields["actor_id"], fields["agency_id"]
    return AuditEvent(
        created_at=row["recorded_at"],
        actor=actor,
        agency=agency,
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


def _lock_sequencer(*, wait: bool) -> tuple[bool, bool]:
    """Take the sequencer's advisory lock until commit: (taken, queue non-empty).

    Not taken if ``wait`` is off and another pass holds it. One statement:
    its look at the queue may predate the lock by the statement's start, so
    a False only skips this batch; the look after release (``sequence_pending``)
    decides when a pass ends.
    """
    # A function in FROM runs once; the waiting one returns void.
    taken, function = ("true", "pg_advisory_xact_lock") if wait else (
        "taken", "pg_try_advisory_xact_lock")  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {taken}, {taken} AND EXISTS (SELECT FROM {_PENDING}) "
            f"FROM {function}(%s) AS taken",
            [_SEQUENCER_LOCK],
        )
        return cursor.fetchone()


def _lock_free() -> bool:
    """Whether no pass holds the sequencer's lock: one statement, in autocommit.

    The lock is taken and released by the statement itself, so a pass that
    fails to take it meanwhile relies on this caller's pass (which looks at
    the queue after it releases the lock) as on any other.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_SEQUENCER_LOCK])
        return cursor.fetchone()[0]


def _pending_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT FROM {_PENDING})")
        return cursor.fetchone()[0]


def _pending_rows(limit: int | None) -> list[tuple]:
    """(id, *_PENDING_FIELDS) of the queue's oldest ``limit`` rows, in id order."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, {', '.join(_PENDING_FIELDS)} FROM {_PENDING} ORDER BY id"
            + (" LIMIT %s" if limit is not None else ""),
            [limit] if limit is not None else [],
        )
        return cursor.fetchall()


def _chain_batch(head: AuditChainHead, pending: list[tuple]) -> list:
    """Append ``pending`` rows after ``head`` (locked): events, nodes, head."""
    created_at = timezone.now()  # under the head's lock: time never runs back
    nodes, bulk = [], tree.BulkNodes(head)
    events: list[AuditEvent] = []
    seq, last = head.seq, head.hash
    for _id, *values in pending:
        fields = dict(zip(_PENDING_FIELDS, values, strict=True))
        event = chain_event(
            seq,
            last,
            created_at=created_at,
            # What the verifier hashes: the stored text, parsed.
            payload_value=parse_json(fields["payload"]),
            **fields,
        )
        nodes.extend(bulk.add(event.hash))
        events.append(event)
        seq, last = event.seq, event.hash
    head.seq, head.hash, head.frontier = seq, last, bulk.edge
    _write_batch(events, nodes, [row[0] for row in pending], head)
    return events


def _write_batch(events: list, nodes: list, pending_ids: list, head) -> None:
    """Events, nodes, head and the queue's deletion in one statement (one trip).

    ``nodes`` are (id, level, index, hash) rows. Raises RuntimeError, dooming
    the pass, unless the DELETE removed every row chained: a row chained
    twice would fork nothing (the head's lock and the unique prev_hash forbid
    it) but is refused before that.
    """
    columns = [f.column for f in AuditEvent._meta.concrete_fields]
    row = f"({', '.join(['%s'] * len(columns))})"
    node_rows = ", ".join(["(%s, %s, %s, %s)"] * len(nodes))
    sql = (
        f"WITH e AS (INSERT INTO {AuditEvent._meta.db_table} "
        f"({', '.join(columns)}) "
        f"VALUES {', '.join([row] * len(events))}), "
        f"n AS (INSERT INTO {AuditMerkleNode._meta.db_table} "
        f'(id, level, "index", hash) VALUES {node_rows}), '
        f"d AS (DELETE FROM {_PENDING} WHERE id = ANY(%s) RETURNING 1) "
        f"UPDATE {_HEAD} SET seq = %s, hash = %s, frontier = %s WHERE id = 1 "
        "RETURNING (SELECT count(*) FROM d)"
    )
    # Values as the model holds them: psycopg adapts each (an aware datetime,
    # str, int, None) as the ORM's own insert would.
    params = [getattr(event, name) for event in events for name in _EVENT_FIELDS]
    params += [value for node in nodes for value in node]
    params += [pending_ids, head.seq, head.hash, head.frontier]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (deleted,) = cursor.fetchone()
    if deleted != len(pending_ids):
        raise RuntimeError("pending audit events were chained by another pass")


def sequence_pending(*, batch: int = SEQUENCE_BATCH, wait: bool = True) -> int:
    """Chain every committed pending event, oldest id first; how many it chained.

    One transaction per ``batch`` events, each holding the sequencer's
    advisory lock and then the chain head's lock; after each, the queue is
    looked at again, and the pass goes on while it holds rows. Without
    ``wait`` (a writer's pass, on commit) it returns at once when another
    pass holds the lock: that pass looks at the queue again after it
    releases the lock (module docstring); outside a transaction that is
    seen in one statement (``_lock_free``) before any transaction is opened.
    Events asked for are announced,
    and a checkpoint queued when a batch crosses a multiple of
    ``AUDIT_CHECKPOINT_EVENTS``, once their batch has committed. Does
    nothing but on PostgreSQL (SQLite never queues). Raises the database's
    errors; a failed batch leaves its events pending.
    """
    if connection.vendor != "postgresql":
        return 0
    if not wait and not connection.in_atomic_block and not _lock_free():
        return 0
    chained = 0
    while True:
        with transaction.atomic():
            # The queue is looked at with the lock, before the head is
            # locked: locking a row takes a transaction id, whose commit
            # would cost an empty pass a WAL flush.
            taken, queued = _lock_sequencer(wait=wait)
            if not taken:
                return chained
            if queued:
                chained += len(chain_pending(lock_head(), limit=batch))
        # Looked at after the lock is released: a pass that failed to take
        # it while this one held it relies on this look.
        if not _pending_exists():
            return chained


def chain_pending(head: AuditChainHead, *, limit: int | None = None) -> list:
    """Chain the pending events this transaction sees after ``head`` (locked).

    Read after the head's lock is taken, so in a snapshot that sees every
    pass committed before; ``head`` is moved forward in memory too. Announces
    and checkpoint queueing run when the transaction commits.
    """
    pending = _pending_rows(limit)
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
