"""The Merkle tree over the audit chain, stored in PostgreSQL: appends and proofs.

``audit.merkle`` holds the RFC 9162 algorithms; this module feeds them from
``AuditMerkleNode`` rows. Every perfect subtree is stored when its last leaf
is appended (in the appending transaction), so MTH of any range a proof needs
is the fold of at most log2(n) stored nodes, and a proof is one query by
primary key over O(log n) ids: no scan, whatever the size of the log.

Proof objects are frozen dataclasses: the stable Python API that
``audit.services`` re-exports (``inclusion_proof``, ``consistency_proof``,
``tree_head_latest``) and the API serves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection

from audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    consistency_path,
    fold,
    inclusion_path,
    leaf_hash,
    node_key,
    perfect_parts,
)
from audit.models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditMerkleNode
from audit.verify import format_timestamp

__all__ = [
    "ConsistencyProof",
    "InclusionProof",
    "ProofError",
    "TreeHead",
    "append_event",
    "consistency_proof",
    "frontier_at",
    "inclusion_path_of",
    "inclusion_proof",
    "root_at",
    "tree_head",
    "tree_head_latest",
]


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head: the first ``tree_size`` events have root ``root_hash``.

    ``envelope`` is the DSSE envelope (the checkpoint's) that signs it;
    ``head_hash`` is the chain hash of event ``tree_size``.
    """

    tree_size: int
    root_hash: str
    head_hash: str
    timestamp: str
    envelope: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InclusionProof:
    """Event ``seq`` (leaf ``leaf_index`` = seq - 1) is in the tree of ``tree_size``.

    Check with ``audit.verify.verify_inclusion(leaf_hash, leaf_index,
    tree_size, path, root_hash)``; ``leaf_hash`` = SHA-256(0x00 || event hash).
    ``tree_head`` is the signed head of that size, when one is stored.
    """

    seq: int
    leaf_index: int
    tree_size: int
    event_hash: str
    leaf_hash: str
    path: list[str]
    root_hash: str
    tree_head: TreeHead | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``second`` leaves extends the tree of ``first`` leaves."""

    first: int
    second: int
    first_root: str
    second_root: str
    path: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- Reading subtrees -----------------------------------------------------------


class _Reader:
    """MTH of ranges from stored nodes, read in one query per proof.

    A proof algorithm runs twice: first to collect the ranges it needs,
    then with their hashes.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.wanted: set[int] = set()
        self.nodes: dict[int, str] | None = None

    def __call__(self, start: int, end: int) -> str:
        parts = [node_key(level, index) for level, index in perfect_parts(start, end)]
        if self.nodes is None:
            self.wanted.update(parts)
            return EMPTY_ROOT
        try:
            return fold([self.nodes[key] for key in parts])
        except KeyError as exc:
            raise ProofError(
                f"the tree lacks a node for leaves {start}..{end}"
            ) from exc

    def load(self) -> None:
        self.nodes = dict(
            AuditMerkleNode.objects.filter(pk__in=self.wanted).values_list("id", "hash")
        )


def _run(size: int, algorithm) -> Any:
    reader = _Reader(size)
    algorithm(reader)
    reader.load()
    return algorithm(reader)


def root_at(size: int) -> str:
    """MTH of the first ``size`` events, from at most log2(size) stored nodes."""
    if size == 0:
        return EMPTY_ROOT
    return _run(size, lambda read: read(0, size))


def frontier_at(size: int) -> Frontier:
    """The right edge of the tree of ``size`` leaves, read from the stored nodes.

    Raises ProofError if a node is missing.
    """
    parts = Frontier.parts(size)
    keys = [node_key(level, index) for level, index in parts]
    nodes = dict(AuditMerkleNode.objects.filter(pk__in=keys).values_list("id", "hash"))
    if len(nodes) != len(keys):
        raise ProofError(f"the tree of {size} leaves lacks stored nodes")
    return Frontier(size, [nodes[key] for key in keys])


def append_event(head: AuditChainHead, event: AuditEvent) -> None:
    """Write ``event`` (seq ``head.seq + 1``), the nodes it completes and the new head.

    Runs under the chain head's lock, in the appending transaction, so it is
    kept to one statement on PostgreSQL (a writable CTE: one round trip while
    the lock is held instead of three). A head whose frontier does not match
    its seq (rebuilt after a flush) gets it back from the stored nodes.
    """
    hashes = head.frontier.split()
    if len(hashes) != bin(head.seq).count("1"):
        frontier = frontier_at(head.seq)
    else:
        frontier = Frontier(head.seq, hashes)
    made = frontier.append(leaf_hash(event.hash))
    edge = " ".join(frontier.hashes)
    nodes = [
        AuditMerkleNode(id=node_key(level, index), level=level, index=index, hash=h)
        for level, index, h in made
    ]
    if connection.vendor != "postgresql":
        event.save(force_insert=True)
        AuditMerkleNode.objects.bulk_create(nodes)
        AuditChainHead.objects.filter(pk=1).update(
            seq=event.seq, hash=event.hash, frontier=edge
        )
        return
    columns = [f.column for f in AuditEvent._meta.concrete_fields]
    values = [f.get_db_prep_save(getattr(event, f.attname), connection)
              for f in AuditEvent._meta.concrete_fields]  # fmt: skip
    rows = ", ".join(["(%s, %s, %s, %s)"] * len(nodes))
    sql = (
        f"WITH e AS (INSERT INTO {AuditEvent._meta.db_table} ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})), "
        f"n AS (INSERT INTO {AuditMerkleNode._meta.db_table} "
        f'(id, level, "index", hash) VALUES {rows}) '
        f"UPDATE {AuditChainHead._meta.db_table} "
        "SET seq = %s, hash = %s, frontier = %s WHERE id = 1"
    )
    params = [*values, *[v for n in nodes for v in (n.id, n.level, n.index, n.hash)]]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, event.seq, event.hash, edge])
    event._state.adding = False
    event._state.db = connection.alias


# --- Tree heads and proofs -------------------------------------------------------


def _head_of(checkpoint: AuditCheckpoint) -> TreeHead:
    return TreeHead(
        tree_size=checkpoint.seq,
        root_hash=checkpoint.root_hash,
        head_hash=checkpoint.head_hash,
        timestamp=format_timestamp(checkpoint.created_at),
        envelope=checkpoint.envelope,
    )


def tree_head(tree_size: int) -> TreeHead | None:
    """The signed tree head of exactly ``tree_size`` events; None if none is stored."""
    checkpoint = (
        AuditCheckpoint.objects.filter(seq=tree_size).exclude(root_hash="").first()
    )
    return _head_of(checkpoint) if checkpoint is not None else None


def tree_head_latest() -> TreeHead | None:
    """The newest signed tree head; None before the first one is signed."""
    checkpoint = AuditCheckpoint.objects.exclude(root_hash="").order_by("-seq").first()
    return _head_of(checkpoint) if checkpoint is not None else None


def committed_size() -> int:
    """How many events the chain holds (the head's seq)."""
    return (
        AuditChainHead.objects.filter(pk=1).values_list("seq", flat=True).first() or 0
    )


def inclusion_proof(event: AuditEvent | int, tree_size: int) -> InclusionProof:
    """The proof that ``event`` (an event or its seq) is in the tree of ``tree_size``.

    Raises ProofError if the event is not among the first ``tree_size``
    events or ``tree_size`` exceeds the chain, AuditEvent.DoesNotExist for an
    unknown seq.
    """
    if not isinstance(event, AuditEvent):
        event = AuditEvent.objects.get(seq=event)
    if tree_size > committed_size():
        raise ProofError(f"the log holds fewer than {tree_size} events")
    index = event.seq - 1
    path, root = _run(
        tree_size,
        lambda read: (inclusion_path(index, tree_size, read), read(0, tree_size)),
    )
    return InclusionProof(
        seq=event.seq,
        leaf_index=index,
        tree_size=tree_size,
        event_hash=event.hash,
        leaf_hash=leaf_hash(event.hash),
        path=path,
        root_hash=root,
        tree_head=tree_head(tree_size),
    )


def inclusion_path_of(seq: int, tree_size: int) -> list[str]:
    """The inclusion path alone of event ``seq`` in the tree of ``tree_size``."""
    return _run(tree_size, lambda read: inclusion_path(seq - 1, tree_size, read))


def consistency_proof(first: int, second: int) -> ConsistencyProof:
    """The proof that the tree of ``second`` events extends that of ``first``.

    Raises ProofError unless 0 <= first <= second <= the chain's size.
    """
    if not 0 <= first <= second or second > committed_size():
        raise ProofError(f"no consistency proof from size {first} to {second}")

    def algorithm(read):
        path = consistency_path(first, second, read) if 0 < first < second else []
        first_root = read(0, first) if first else EMPTY_ROOT
        return path, first_root, read(0, second) if second else EMPTY_ROOT

    path, first_root, second_root = _run(second, algorithm)
    return ConsistencyProof(
        first=first,
        second=second,
        first_root=first_root,
        second_root=second_root,
        path=path,
    )
