"""The audit app's records: the hash chain, its signed checkpoints, security events.

A leaf: it imports Django and ``audit.verify`` and nothing else of the project.
``agency`` foreign keys name ``registry.Agency`` by string, which is no import.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from audit.verify import GENESIS_HASH, event_hash, format_timestamp

# --- Audit chain ---------------------------------------------------------------
# Written only by audit.services. The tables keep the names they had in the
# governance app: on PostgreSQL, triggers (governance migration 0002) refuse
# UPDATE, DELETE and TRUNCATE on AuditEvent and AuditCheckpoint by table name.


class AuditChainHead(models.Model):
    """The one row naming the last event of the chain; its lock serialises appends.

    Invariant: ``seq``/``hash`` are those of the last AuditEvent (0 and the
    genesis hash while the chain is empty). Only ``audit.services`` writes
    it, inside the transaction that appends the event.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)
    # The Merkle tree's right edge at ``seq`` leaves: the perfect subtree
    # hashes of the set bits of seq, lowest level first, space-separated.
    frontier = models.TextField(default="", blank=True)

    class Meta:
        db_table = "governance_auditchainhead"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="audit_chain_head_one_row")
        ]

    def __str__(self) -> str:
        return f"audit chain head at seq {self.seq}"


class AuditEvent(models.Model):
    """One link of the hash chain: who did what to which object, when.

    Invariants: ``seq`` runs 1, 2, 3... without gaps; ``prev_hash`` is the
    previous event's ``hash`` (the genesis hash for seq 1) and is unique, so
    the chain cannot fork; ``hash`` is SHA-256 over the canonical JSON of the
    hashed fields (``audit.verify.HASHED_FIELDS``). ``payload`` is stored
    as the canonical JSON text itself, not jsonb, so the bytes that were hashed
    are the bytes kept. ``actor``/``agency`` are query keys; the hash covers
    their snapshots ``actor_label``/``agency_slug``. Never updated or deleted.
    """

    seq = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    actor_label = models.CharField(max_length=200)
    agency = models.ForeignKey(
        "registry.Agency",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit_events",
        db_index=False,
    )
    agency_slug = models.CharField(max_length=80, blank=True)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    payload = models.TextField(default="{}", help_text="canonical JSON")
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "governance_auditevent"
        ordering = ["seq"]
        indexes = [
            # Each index serves a filter of the events API ordered by seq.
            models.Index(fields=["agency", "seq"], name="audit_event_agency_seq"),
            models.Index(fields=["action", "seq"], name="audit_event_action_seq"),
            models.Index(
                fields=["object_type", "object_id", "seq"],
                name="audit_event_object_seq",
            ),
            # The API's ``agency`` filter reads the slug snapshot.
            models.Index(fields=["agency_slug", "seq"], name="load_audit_slug_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_type}:{self.object_id}"

    @property
    def payload_data(self) -> dict[str, Any]:
        """The payload parsed back into Python values."""
        return json.loads(self.payload)

    def chain_fields(self) -> dict[str, Any]:
        """The event as the verifier and the export see it (hashed fields + hash)."""
        return {
            "seq": self.seq,
            "created_at": format_timestamp(self.created_at),
            "actor_label": self.actor_label,
            "agency_slug": self.agency_slug,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "payload": self.payload_data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    def compute_hash(self) -> str:
        """Recompute the hash from the stored fields (equal to ``hash`` if intact)."""
        return event_hash(self.chain_fields())


class AuditPendingEvent(models.Model):
    """An event recorded while another writer held the chain head: not chained yet.

    ``audit.services.record`` writes it in the recording transaction when the
    head's lock is taken (docs/audit.md, "Appends under contention");
    ``audit.sequencer`` chains it after that transaction commits, in id order,
    and deletes it in the transaction that appends its AuditEvent, which gets
    seq, created_at, prev_hash and hash then. Never updated; neither hashed nor
    signed while it waits. ``recorded_at`` is when ``record`` was called.
    """

    recorded_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,  # a small, short-lived table: inserts stay cheap
    )
    actor_label = models.CharField(max_length=200)
    agency = models.ForeignKey(
        "registry.Agency",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    agency_slug = models.CharField(max_length=80, blank=True)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    payload = models.TextField(default="{}", help_text="canonical JSON")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"pending {self.action} {self.object_type}:{self.object_id}"


class AuditCheckpoint(models.Model):
    """A signed statement of the chain head: (seq, head_hash) under the platform key.

    ``envelope`` is a DSSE envelope (payloadType
    ``application/vnd.civitas.audit-checkpoint+json``) whose payload is the
    canonical JSON ``{"created_at", "head_hash", "seq"}``; ``seq``/``head_hash``
    repeat it for queries and must equal it. One checkpoint per seq. Never
    updated or deleted.
    """

    seq = models.BigIntegerField(unique=True)
    head_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    envelope = models.JSONField()
    # The signed tree head: Merkle root over the first ``seq`` events (empty
    # for checkpoints signed before the tree existed).
    root_hash = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        db_table = "governance_auditcheckpoint"
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"checkpoint at seq {self.seq}"


class AuditMerkleNode(models.Model):
    """One perfect subtree of the Merkle tree over the events (``audit.merkle``).

    ``level`` 0 holds leaf hashes (leaf ``index`` = seq - 1); a node at level
    L covers leaves [index * 2**L, (index + 1) * 2**L). ``id`` is
    ``audit.merkle.node_key(level, index)``. Written with its completing
    event, in the same transaction; never updated or deleted. Any proof reads
    O(log n) of these rows by primary key.
    """

    id = models.BigIntegerField(primary_key=True)
    level = models.PositiveSmallIntegerField()
    index = models.BigIntegerField()
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "audit_merklenode"

    def __str__(self) -> str:
        return f"merkle node {self.level}/{self.index}"


# --- Security events --------------------------------------------------------------
# Kept apart from the chain: a flood of probes must not grow it, so these rows
# are rate-limited per caller and are neither hashed nor signed.


class SecurityEvent(models.Model):
    """A denied request (``authz.denied``): who asked for what, and the answer.

    Written only by ``audit.security.security_event_record``, at most
    ``AUDIT_SECURITY_EVENTS_PER_MINUTE`` per caller and minute; ``suppressed``
    counts the caller's denials dropped by that limit since its previous
    recorded one. ``agency`` is the agency owning the object asked for, when it
    is known. Not part of the hash chain; never changed after it is written.
    """

    created_at = models.DateTimeField()
    action = models.CharField(max_length=100)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="security_events",
    )
    actor_label = models.CharField(max_length=200)
    agency = models.ForeignKey(
        "registry.Agency",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="security_events",
    )
    agency_slug = models.CharField(max_length=80, blank=True)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    status_code = models.PositiveSmallIntegerField()
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    suppressed = models.PositiveIntegerField(
        default=0, help_text="denials of this caller dropped by the rate limit before"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["actor", "created_at"], name="security_event_actor"),
            models.Index(fields=["action", "created_at"], name="security_event_action"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.method} {self.path} by {self.actor_label}"
