"""The audit log as a Merkle tree in the manner of RFC 9162 (CT 2.0), section 2.1.

Verification (and the tree edge) lives in ``audit.verify``, the auditors' single
file; this module builds proofs for the platform.

The leaves are the events in seq order (leaf index = seq - 1) and the leaf
data of an event is the 32 bytes of its chain hash (``AuditEvent.hash``), so
the tree commits to everything the chain does. Hashes are hex strings here.

Written by hand, not taken from PyPI: pymerkle, the maintained library, is
storage-agnostic through its ``BaseMerkleTree`` interface but computes subtree
roots from ranges of leaves (with an in-process cache), so a cold proof over
a million events reads up to a million leaves; the platform instead stores
every perfect subtree hash in PostgreSQL and builds a proof from O(log n)
indexed reads. (pymerkle is also absent from the package index this
platform installs from.) What follows is the RFC's algorithms: PATH and
SUBPROOF (2.1.3.1, 2.1.4.1) over a ``subtree`` callback, and the verification
procedures of 2.1.3.2 and 2.1.4.2 verbatim; tests check both against a
brute-force computation from the leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from audit.verify import (
    EMPTY_ROOT,
    TreeEdge,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "ProofError",
    "consistency_path",
    "fold",
    "inclusion_path",
    "leaf_hash",
    "node_hash",
    "node_key",
    "perfect_parts",
    "verify_consistency",
    "verify_inclusion",
]


class ProofError(ValueError):
    """A proof is malformed or does not verify."""


def split(size: int) -> int:
    """The largest power of two smaller than ``size`` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def node_key(level: int, index: int) -> int:
    """The stored id of the perfect subtree ``index`` at ``level`` (2**level leaves)."""
    return (index << 6) | level


def perfect_parts(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect aligned subtrees (level, index) whose hashes make MTH(D[start:end]).

    Valid for the ranges the RFC's recursion produces: ``start`` is a
    multiple of a power of two >= end - start. Left to right.
    """
    parts = []
    while start < end:
        level = (end - start).bit_length() - 1
        parts.append((level, start >> level))
        start += 1 << level
    return parts


def fold(hashes: Sequence[str]) -> str:
    """MTH of a range from its ``perfect_parts`` hashes (left to right)."""
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


Subtree = Callable[[int, int], str]  # MTH(D[start:end]) of the whole log


def inclusion_path(index: int, size: int, subtree: Subtree) -> list[str]:
    """PATH(index, D[size]) (RFC 9162 2.1.3.1), leaf to root."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[str] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    return list(reversed(path))


def consistency_path(first: int, second: int, subtree: Subtree) -> list[str]:
    """PROOF(first, D[second]) = SUBPROOF(first, D[second], true) (2.1.4.1)."""
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from size {first} to {second}")
    path: list[str] = []
    start, end, m, whole = 0, second, first, True
    while m != end - start:
        k = split(end - start)
        if m <= k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        path.append(subtree(start, end))
    return list(reversed(path))


class Frontier(TreeEdge):
    """The right edge of the tree (``audit.verify.TreeEdge``) that also reports
    the perfect subtrees each appended leaf completes, for the store."""

    def append(self, leaf: str) -> list[tuple[int, int, str]]:
        """Add leaf hash ``leaf``; the completed subtrees, level 0 first."""
        made = [(0, self.size, leaf)]
        self.push(leaf, made)
        return made

    @staticmethod
    def parts(size: int) -> list[tuple[int, int]]:
        """The (level, index) of the edge's subtrees, lowest level first."""
        return list(reversed(perfect_parts(0, size)))
