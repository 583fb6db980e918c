"""The audit chain: append events, verify the chain, sign checkpoints, export.

A leaf that any service may call: it imports Django, ``audit.models``,
``audit.signing`` and ``audit.verify`` and nothing else of the project.
Hashing and canonical JSON come from ``audit.verify``, the
standalone verifier auditors run, so both sides hash the same way.

An append chains its event inline when it gets the one ``AuditChainHead``
row's lock at once (``FOR UPDATE SKIP LOCKED``), holding it for the rest of
the caller's transaction; when another writer holds it, the event is queued
and ``audit.sequencer`` chains it after the caller commits. Either way every
append happens under the head's lock, so seqs have no gaps and the chain
never forks. On SQLite the database serialises writers itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit import rows, sequencer, signing, tree
from audit.merkle import Frontier, ProofError
from audit.models import (
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    AuditPendingEvent,
)
from audit.sequencer import announce as _announce
from audit.sequencer import queue_checkpoint as _queue_checkpoint
from audit.sequencer import sequence_pending
from audit.signals import is_announced
from audit.tree import ConsistencyProof, InclusionProof, TreeHead
from audit.verify import (
    CHECKPOINT_PAYLOAD_TYPE,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    GENESIS_HASH,
    HASHED_FIELDS,
    PARALLEL_MIN_EVENTS,
    ChainReport,
    ChainVerifier,
    VerificationError,
    canonical_json,
    canonical_value,
    default_workers,
    format_timestamp,
    open_checkpoint,
    parse_json,
)

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MODEL_VERSION_TYPE",
    "SYSTEM_ACTOR_LABEL",
    "AuditChainBroken",
    "AuditExport",
    "ConsistencyProof",
    "InclusionProof",
    "ProofError",
    "TreeHead",
    "actor_label_of",
    "checkpoint_create",
    "checkpoint_if_due",
    "consistency_proof",
    "export_open",
    "inclusion_proof",
    "record",
    "sequence_pending",
    "tree_head_latest",
    "verify_chain",
]

logger = logging.getLogger(__name__)

SYSTEM_ACTOR_LABEL = "system"
MODEL_VERSION_TYPE = "registry.modelversion"
MAX_PAYLOAD_BYTES = 64 * 1024
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_MAX_NAME_LENGTH = 100  # action, object_type and object_id columns
_BATCH = 5000
_EVENT_COLUMNS = (*HASHED_FIELDS, "hash")
# Any constant shared by every process: the advisory lock serialising signers.
_CHECKPOINT_LOCK = 0x4349564954415301


class AuditChainBroken(Exception):
    """The chain failed verification, so no checkpoint was signed over it."""


def actor_label_of(actor: AbstractBaseUser | None) -> str:
    """The snapshot of who acted: ``username#id`` for a user, ``system`` for None.

    Raises ValueError for an anonymous or unsaved user.
    """
    if actor is None:
        return SYSTEM_ACTOR_LABEL
    if not getattr(actor, "is_authenticated", False) or actor.pk is None:
        raise ValueError("the actor must be a saved user, or None for the system")
    return f"{actor.get_username()}#{actor.pk}"


def _agency_of(obj: models.Model) -> models.Model | None:
    """The agency an object belongs to directly (itself or its ``agency`` FK)."""
    if obj._meta.label_lower == "registry.agency":
        return obj
    if getattr(obj, "agency_id", None) is not None:
        return obj.agency
    return None


def _event_fields(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    obj: models.Model | None,
    object_type: str | None,
    object_id: str | None,
    agency: models.Model | None,
    payload: dict[str, Any] | None,
) -> tuple[dict[str, Any], Any, str, models.Model | None]:
    """Validate ``record``'s arguments: the event's fields, payload and agency.

    Raises what ``record`` documents (ValueError, TypeError); writes nothing.
    """
    if not isinstance(action, str) or not _ACTION.match(action):
        raise ValueError(f"action {action!r} is not dotted lower-case words")
    if obj is not None:
        if obj.pk is None:
            raise ValueError("the audited object is not saved")
        object_type = object_type or obj._meta.label_lower
        object_id = object_id if object_id is not None else str(obj.pk)
        if agency is None:
            agency = _agency_of(obj)
    if agency is not None and agency.pk is None:
        raise ValueError("the agency is not saved")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise TypeError("the audit payload must be a dict")
    payload_value = canonical_value(payload)
    payload_bytes = canonical_json(payload_value)
    if len(payload_bytes) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"the audit payload exceeds {MAX_PAYLOAD_BYTES} bytes")
    payload_text = payload_bytes.decode("utf-8")
    fields: dict[str, Any] = {
        "actor_label": actor_label_of(actor),
        "agency_slug": agency.slug if agency is not None else "",
        "action": action,
        "object_type": object_type or "",
        "object_id": "" if object_id is None else str(object_id),
    }
    for name in ("action", "object_type", "object_id"):
        if len(fields[name]) > _MAX_NAME_LENGTH:
            raise ValueError(f"{name} is longer than {_MAX_NAME_LENGTH} characters")
    return fields, payload_value, payload_text, agency


def record(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    obj: models.Model | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    agency: models.Model | None = None,
    payload: dict[str, Any] | None = None,
    wait: bool = False,
) -> AuditEvent:
    """Append one event to the audit chain, inside the caller's transaction.

    ``actor`` is the acting user, or None for the platform itself. ``obj`` (a
    saved model instance) supplies ``object_type`` (``app.model``) and
    ``object_id`` unless they are given, and ``agency`` when it is an Agency or
    has an ``agency`` foreign key. The event commits or rolls back with the
    caller's transaction and is never in the chain before it commits.

    When the chain head is free, the event is chained at once and returned
    with its seq and hash; the head stays locked until the caller's
    transaction ends, so keep it short after recording. When another writer
    holds it, the event is queued and chained just after the caller commits
    (docs/audit.md, "Appends under contention"): the returned event is
    unsaved, ``seq`` and ``hash`` None, and the transaction's later events
    are queued too. ``wait=True`` waits for the head instead, for a caller
    that needs the seq and hash. Once the event is chained and committed,
    ``audit.signals.event_recorded`` announces it if an app asked for it
    (``announce_when``: notifications). ``payload`` is canonicalised (see
    docs/audit.md): plain JSON values, aware datetimes, dates, Decimals, UUIDs.

    Raises TransactionManagementError outside ``transaction.atomic``;
    ValueError for an action that is not dotted lower-case words, an action,
    object type or id over 100 characters, an unsaved object, agency or
    actor, NaN/Infinity or naive datetimes in the payload, or a payload over
    MAX_PAYLOAD_BYTES; TypeError for a payload that is not a
    dict or holds a value with no canonical JSON form.
    """
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError(
            "audit.record must run inside the caller's transaction.atomic block"
        )
    fields, payload_value, payload_text, agency = _event_fields(
        actor=actor,
        action=action,
        obj=obj,
        object_type=object_type,
        object_id=object_id,
        agency=agency,
        payload=payload,
    )
    row = sequencer.pending_row(
        fields=fields, actor=actor, agency=agency, payload_text=payload_text
    )
    # No savepoint: a failed append dooms the caller's transaction, which must
    # never commit without its event.
    with transaction.atomic(savepoint=False):
        head = _head_for(wait=wait, row=row)
        if head is None:
            # Queued: chained once this transaction commits (audit.sequencer).
            return sequencer.queued(row, actor=actor, agency=agency)
        event = sequencer.chain_event(
            head.seq,
            head.hash,
            # Taken under the lock, so time never runs backwards along the
            # chain (barring a clock step).
            created_at=timezone.now(),
            actor=actor,
            agency=agency,
            payload=payload_text,
            payload_value=payload_value,
            **fields,
        )
        tree.append_event(head, event)
    if is_announced(action, payload_value):
        transaction.on_commit(lambda: _announce(event))
    if event.seq % max(settings.AUDIT_CHECKPOINT_EVENTS, 1) == 0:
        # Another AUDIT_CHECKPOINT_EVENTS events: sign them once they commit.
        transaction.on_commit(_queue_checkpoint)
    return event


def _head_for(*, wait: bool, row: dict) -> AuditChainHead | None:
    """The head, locked for an inline append; None when ``row`` was queued instead.

    A transaction that queued events queues the rest too, so its events keep
    their order; with ``wait`` it waits for the head. Pending events the
    transaction sees are chained before its own.
    """
    if wait:
        head = sequencer.lock_head()
    elif sequencer.is_queueing():
        sequencer.pending_add(row)
        return None
    else:
        # Queues ``row`` in the same statement when another writer holds it.
        head = sequencer.head_try_lock(row)
    if head is not None:
        # No append overtakes one committed (or queued by this transaction)
        # before it: those are chained first.
        sequencer.chain_pending(head)
    return head


def last_recorded_at(*, action: str, obj: models.Model):
    """When ``action`` was last recorded on ``obj``; None if never."""
    return (
        AuditEvent.objects.filter(
            action=action,
            object_type=obj._meta.label_lower,
            object_id=str(obj.pk),
        )
        .order_by("-seq")
        .values_list("created_at", flat=True)
        .first()
    )


# --- Verification --------------------------------------------------------------


def _event_rows(queryset: QuerySet, *, after: int = 0) -> Iterator[dict[str, Any]]:
    """Events of ``queryset`` with seq > ``after``, in seq order, as chain dicts.

    Read in keyset batches, so memory stays flat and no server-side cursor is
    needed. A stored payload that is not JSON is passed on as text, which
    then fails its hash.
    """
    while True:
        batch = list(
            queryset.filter(seq__gt=after)
            .order_by("seq")
            .values_list(*_EVENT_COLUMNS)[:_BATCH]
        )
        for row in batch:
            event = dict(zip(_EVENT_COLUMNS, row, strict=True))
            event["created_at"] = format_timestamp(event["created_at"])
            with contextlib.suppress(ValueError):
                event["payload"] = parse_json(event["payload"])
            yield event
        if len(batch) < _BATCH:
            return
        after = batch[-1][0]


def _load_checkpoints(verifier: ChainVerifier, public_key: Any) -> None:
    for checkpoint in AuditCheckpoint.objects.order_by("seq"):
        try:
            verifier.add_checkpoint(
                open_checkpoint(
                    checkpoint.envelope,
                    public_key,
                    stated_seq=checkpoint.seq,
                    stated_head_hash=checkpoint.head_hash,
                )
            )
        except VerificationError as exc:
            verifier.reject_checkpoint(
                f"checkpoint at seq {checkpoint.seq} rejected: {exc}"
            )


def _verify_events(
    verifier: ChainVerifier,
    *,
    snapshot: bool,
    workers: int | None,
    chunks: int | None,
    after: int = 0,
    upto: int | None = None,
) -> None:
    """Feed the events after seq ``after`` (up to ``upto``, default all) to
    ``verifier``, in worker processes when worthwhile (they need the snapshot:
    committed rows, one view for all of them)."""
    if connection.vendor != "postgresql":
        events = AuditEvent.objects.all()
        if upto is not None:
            events = events.filter(seq__lte=upto)
        verifier.add_many(_event_rows(events, after=after))
        return
    table = AuditEvent._meta.db_table
    last_seq = upto
    if last_seq is None:
        last_seq = AuditEvent.objects.aggregate(last=models.Max("seq"))["last"] or 0
    if workers is None:
        big = last_seq - after >= PARALLEL_MIN_EVENTS
        workers = default_workers() if big else 1
    if not snapshot or (workers <= 1 and chunks is None):
        events = rows.event_rows(connection.connection, table, after, upto)
        verifier.add_many(events, digest_of=rows.stored_digest)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_export_snapshot()")
        exported = cursor.fetchone()[0]
    conninfo = rows.conninfo_of(connection.settings_dict)
    rows.verify_segments(
        verifier, table=table, last_seq=last_seq, conninfo=conninfo,
        snapshot=exported, workers=workers, chunks=chunks, after=after, upto=upto,
    )  # fmt: skip


def verify_chain(
    *,
    public_key: Any = None,
    extra_checkpoints: Iterable[Mapping[str, Any]] = (),
    workers: int | None = None,
    chunks: int | None = None,
) -> ChainReport:
    """Recompute the whole chain from the database and check every checkpoint.

    With a snapshot (below), ``workers`` processes (default one per core for a
    large chain) check it in ``chunks`` seq ranges; the report is the same.

    Checkpoints are verified with ``public_key`` (PEM or key; default the
    platform key), as are ``extra_checkpoints`` (envelopes kept outside the
    database). On PostgreSQL, outside any transaction, everything is read in
    one REPEATABLE READ snapshot, so appends running meanwhile do not count.
    Never raises for a broken chain: the report says what is wrong.
    """
    key = public_key if public_key is not None else signing.public_key()
    # SET TRANSACTION must be the first statement of a transaction: only
    # possible when this call opens it.
    snapshot = connection.vendor == "postgresql" and not connection.in_atomic_block
    if snapshot:
        _sequence_leftovers()
    with transaction.atomic():
        if snapshot:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        verifier = ChainVerifier()
        _load_checkpoints(verifier, key)
        for envelope in extra_checkpoints:
            try:
                verifier.add_checkpoint(
                    open_checkpoint(envelope.get("envelope", envelope), key)
                )
            except VerificationError as exc:
                verifier.reject_checkpoint(f"external checkpoint rejected: {exc}")
        head = AuditChainHead.objects.filter(pk=1).values("seq", "hash").first()
        _verify_events(verifier, snapshot=snapshot, workers=workers, chunks=chunks)
        report = verifier.finish(
            expected_last_seq=head["seq"] if head else None,
            expected_head_hash=head["hash"] if head else None,
        )
        pending = AuditPendingEvent.objects.count()
        if pending:
            report.notes.append(
                f"{pending} recorded event(s) queued, not chained yet "
                "(docs/audit.md, appends under contention)"
            )
    if not report.ok:
        logger.error("audit chain verification failed: %s", report.reason)
    return report


# --- Checkpoints -----------------------------------------------------------------


def checkpoint_create(
    *, workers: int | None = None, chunks: int | None = None
) -> AuditCheckpoint | None:
    """Sign the current chain head with the platform key and store it.

    First re-verifies the events appended since the previous checkpoint,
    starting from that checkpoint's signed head, so the platform never signs
    over a broken segment. Returns None when the chain is empty or its head is
    already checkpointed. Raises AuditChainBroken if the segment fails, and
    whatever ``signing`` raises for an unusable key (ImproperlyConfigured).
    Outside a transaction, queued events left by a writer that died are
    chained first, so they are signed too, and a long segment is verified by
    ``workers`` processes (default one per core) in ``chunks`` seq ranges, as
    ``verify_chain`` does.
    """
    snapshot = connection.vendor == "postgresql" and not connection.in_atomic_block
    if not connection.in_atomic_block:
        _sequence_leftovers()
    with transaction.atomic():
        _lock_signers()
        return _checkpoint_create_locked(
            snapshot=snapshot, workers=workers, chunks=chunks
        )


def _sequence_leftovers() -> None:
    """Chain queued events whose writer's own pass never ran; errors only logged."""
    try:
        chained = sequencer.sequence_pending()
    except Exception:  # verification and signing go on over what is chained
        logger.warning("could not sequence pending audit events", exc_info=True)
        return
    if chained:
        logger.info("chained %d pending audit events", chained)


def _lock_signers() -> None:
    """Serialise signers (beat, start-up, on-commit, a command) until commit.

    An advisory lock, not a row lock on the chain head: appends go on while a
    long segment is verified. The second signer waits, then finds the head
    signed and returns None. SQLite serialises writers itself.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHECKPOINT_LOCK])


def _checkpoint_create_locked(
    *, snapshot: bool, workers: int | None, chunks: int | None
) -> AuditCheckpoint | None:
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None or head.seq == 0:
        return None
    latest = AuditCheckpoint.objects.order_by("-seq").first()
    if latest is not None and latest.seq >= head.seq:
        return None
    start_seq, start_hash, start_root = 0, GENESIS_HASH, None
    if latest is not None:
        try:
            signed = open_checkpoint(
                latest.envelope,
                signing.public_key(),
                stated_seq=latest.seq,
                stated_head_hash=latest.head_hash,
            )
        except VerificationError as exc:
            raise AuditChainBroken(
                f"the latest checkpoint is not authentic: {exc}"
            ) from exc
        start_seq, start_hash, start_root = (
            signed.seq,
            signed.head_hash,
            signed.root_hash,
        )
    verifier = ChainVerifier(
        start_seq=start_seq,
        start_hash=start_hash,
        start_frontier=_start_frontier(start_seq, start_root),
    )
    _verify_events(
        verifier, snapshot=snapshot, workers=workers, chunks=chunks,
        after=start_seq, upto=head.seq,
    )  # fmt: skip
    report = verifier.finish(expected_last_seq=head.seq, expected_head_hash=head.hash)
    root_hash = verifier.frontier.root()
    if report.ok and root_hash != tree.root_at(head.seq):
        report.ok, report.reason = (
            False,
            "the stored Merkle tree differs from the chain",
        )
    if not report.ok:
        logger.error("audit checkpoint refused: %s", report.reason)
        raise AuditChainBroken(report.reason)
    created_at = timezone.now()
    statement = {
        "seq": head.seq,
        "head_hash": head.hash,
        "created_at": format_timestamp(created_at),
        "tree_size": head.seq,
        "root_hash": root_hash,
    }
    envelope = signing.sign_envelope(canonical_json(statement), CHECKPOINT_PAYLOAD_TYPE)
    try:
        with transaction.atomic():
            return AuditCheckpoint.objects.create(
                seq=head.seq,
                head_hash=head.hash,
                root_hash=root_hash,
                created_at=created_at,
                envelope=envelope,
            )
    except IntegrityError:
        # A concurrent run on a database without advisory locks signed it first.
        return AuditCheckpoint.objects.get(seq=head.seq)


def _start_frontier(start_seq: int, signed_root: str | None) -> Frontier:
    """The tree's right edge at a signed checkpoint, checked against its root.

    Raises AuditChainBroken if the stored nodes disagree with the signed
    root, or are missing while the checkpoint predates the tree (then the
    tree is rebuilt from the stored nodes, which the chain's verification
    up to that checkpoint vouches for).
    """
    try:
        frontier = tree.frontier_at(start_seq)
    except ProofError as exc:
        raise AuditChainBroken(str(exc)) from exc
    if signed_root is not None and frontier.root() != signed_root:
        raise AuditChainBroken(
            "the stored Merkle tree differs from the signed tree head"
        )
    return frontier


def checkpoint_if_due() -> AuditCheckpoint | None:
    """Sign the chain head if a checkpoint is due; None if none is.

    Due when the chain has events and none is signed yet, or when
    ``AUDIT_CHECKPOINT_EVENTS`` events were appended since the newest
    checkpoint, or ``AUDIT_CHECKPOINT_MINUTES`` have passed since it and at
    least one event is unsigned. Beat asks every minute. Raises what
    ``checkpoint_create`` raises.
    """
    head = AuditChainHead.objects.filter(pk=1).values_list("seq", flat=True).first()
    if not head:
        return None
    latest = (
        AuditCheckpoint.objects.order_by("-seq").values("seq", "created_at").first()
    )
    if latest is not None:
        unsigned = head - latest["seq"]
        age = timezone.now() - latest["created_at"]
        if unsigned <= 0 or (
            unsigned < settings.AUDIT_CHECKPOINT_EVENTS
            and age < timedelta(minutes=settings.AUDIT_CHECKPOINT_MINUTES)
        ):
            return None
    return checkpoint_create()


# --- Export ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditExport:
    """A snapshot of the chain (events up to ``up_to_seq``) ready to stream as JSONL.

    ``object_type``/``object_id`` restrict it to one object's events (a
    partial export); ``agency_ids`` further to events of those agencies.
    """

    up_to_seq: int
    object_type: str | None = None
    object_id: str | None = None
    agency_ids: frozenset[int] | None = None

    @property
    def is_partial(self) -> bool:
        """True unless every event of the chain is exported."""
        return self.object_type is not None or self.agency_ids is not None

    @property
    def with_proofs(self) -> bool:
        """A partial export whose snapshot is a signed tree head proves each event."""
        return self.is_partial and tree.tree_head(self.up_to_seq) is not None

    def _events(self) -> Iterator[dict[str, Any]]:
        """The exported events as chain dicts, read in windows of seqs."""
        scope: dict[str, Any] = {}
        if self.object_type is not None:
            scope |= {"object_type": self.object_type, "object_id": self.object_id}
        if self.agency_ids is not None:
            scope["agency_id"] = sorted(self.agency_ids)
        if connection.vendor == "postgresql":
            connection.ensure_connection()
            table = AuditEvent._meta.db_table
            return rows.event_pages(connection.connection, table, self.up_to_seq, scope)
        events = AuditEvent.objects.filter(seq__lte=self.up_to_seq)
        for column, value in scope.items():
            lookup = f"{column}__in" if isinstance(value, list) else column
            events = events.filter(**{lookup: value})
        return _event_rows(events)

    def lines(self) -> Iterator[str]:
        """The export, one JSON object per line: header, checkpoints, events, end."""
        with_proofs = self.with_proofs
        yield _line(
            {
                "type": "header",
                "format": EXPORT_FORMAT,
                "version": EXPORT_VERSION,
                "exported_at": format_timestamp(timezone.now()),
                "up_to_seq": self.up_to_seq,
                "partial": self.is_partial,
                "scope": (
                    {"object_type": self.object_type, "object_id": self.object_id}
                    if self.object_type is not None
                    else None
                ),
                "hash": "sha256",
                "signature": "ed25519",
                "inclusion_proofs": with_proofs,
                "keyid": signing.platform_key_id(),
                "public_key_pem": signing.public_key_pem(),
            }
        )
        for checkpoint in AuditCheckpoint.objects.filter(seq__lte=self.up_to_seq):
            yield _line(
                {
                    "type": "checkpoint",
                    "seq": checkpoint.seq,
                    "head_hash": checkpoint.head_hash,
                    "created_at": format_timestamp(checkpoint.created_at),
                    "envelope": checkpoint.envelope,
                }
            )
        count = 0
        for event in self._events():
            count += 1
            if with_proofs:
                path = tree.inclusion_path_of(event["seq"], self.up_to_seq)
                event["proof"] = {"tree_size": self.up_to_seq, "path": path}
            yield _line({"type": "event", **event})
        yield _line({"type": "end", "events": count, "up_to_seq": self.up_to_seq})


# json.dumps(item, ensure_ascii=False, separators=(",", ":")), the encoder
# built once instead of per line (same C function, same options; no check for
# circular references, which rows read from the database cannot hold).
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_C_LINE = c_make_encoder and c_make_encoder(
    None, _LINE_ENCODER.default, encode_basestring, None, ":", ",", False, False, True
)


def _line(item: dict[str, Any]) -> str:
    if _C_LINE:
        return "".join(_C_LINE(item, 0)) + "\n"
    return _LINE_ENCODER.encode(item) + "\n"


def export_open(
    *,
    actor: AbstractBaseUser | None,
    object_type: str | None = None,
    object_id: str | None = None,
    agency_ids: Iterable[int] | None = None,
    via: str,
) -> AuditExport:
    """Fix the snapshot of an export and record ``audit.exported`` after it.

    The head is signed first (unless it already is), so the export ends with
    a checkpoint over its last event and proves more than itself; a chain
    that fails verification is exported all the same, without a new
    signature, for the auditor to see. The export covers events up to the
    current head; the ``audit.exported`` event is appended after that point,
    so the export never contains itself. ``via`` says where it was asked for
    (``api``, ``cli``). Raises what ``record`` raises.
    """
    try:
        checkpoint_create()
    except AuditChainBroken:
        logger.error("exporting an audit chain that fails verification")
    with transaction.atomic():
        head = AuditChainHead.objects.filter(pk=1).values_list("seq", flat=True).first()
        signed = tree.tree_head_latest()
        if signed is not None and (object_type is not None or agency_ids is not None):
            # A partial export stops at the signed tree head its proofs lead to.
            head = signed.tree_size
        export = AuditExport(
            up_to_seq=head or 0,
            object_type=object_type,
            object_id=None if object_id is None else str(object_id),
            agency_ids=frozenset(agency_ids) if agency_ids is not None else None,
        )
        record(
            actor=actor,
            action="audit.exported",
            object_type=object_type or "audit.chain",
            object_id=export.object_id or "",
            payload={
                "up_to_seq": export.up_to_seq,
                "partial": export.is_partial,
                "via": via,
            },
        )
    return export


# --- Merkle proofs (the stable API federation uses) --------------------------------


def tree_head_latest() -> TreeHead | None:
    """The newest signed tree head (size, root, timestamp, envelope); None if none."""
    return tree.tree_head_latest()


def inclusion_proof(
    event: AuditEvent | int, tree_size: int | None = None
) -> InclusionProof:
    """The inclusion proof of ``event`` (or its seq) in the tree of ``tree_size``.

    Without ``tree_size``, the newest signed tree head that contains the
    event; the head is signed first if none does yet. Raises ProofError for
    a tree size below the event's seq or above the log's, or when the head
    cannot be signed (a broken chain); AuditEvent.DoesNotExist for an unknown
    seq; ImproperlyConfigured for an unusable signing key.
    """
    seq = event.seq if isinstance(event, AuditEvent) else int(event)
    if tree_size is None:
        head = tree.tree_head_latest()
        if head is None or head.tree_size < seq:
            try:
                checkpoint_create()
            except AuditChainBroken as exc:
                raise ProofError(f"no tree head can be signed: {exc}") from exc
            head = tree.tree_head_latest()
        tree_size = head.tree_size if head is not None else seq
    if not 0 < seq <= tree_size:
        raise ProofError(f"event {seq} is not in a tree of {tree_size} events")
    return tree.inclusion_proof(event, tree_size)


def consistency_proof(first: int, second: int | None = None) -> ConsistencyProof:
    """The proof that the tree of ``second`` events (default: the newest signed
    head) extends the tree of ``first``. Raises ProofError for bad sizes."""
    if second is None:
        head = tree.tree_head_latest()
        second = head.tree_size if head is not None else 0
    return tree.consistency_proof(first, second)
