"""Standalone verifier of the Civitas audit chain and of signed envelopes.

An auditor runs this one file with Python 3.11+ and ``cryptography`` only:
``python verify.py chain.jsonl [--key public.pem] [--checkpoint cp.json ...]``
or ``python verify.py attestation.json --key public.pem``. It never imports
Django or the project: the platform imports *this* module, so canonical JSON,
event hashing, DSSE, checkpoints and Merkle proofs are defined once, here
(docs/audit.md; golden vectors in tests/audit/test_verify.py). Exit status:
0 verified, 1 verification failed, 2 unusable input or usage.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import decimal
import hashlib
import json
import math
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS_HASH = "0" * 64
CHECKPOINT_PAYLOAD_TYPE = "application/vnd.civitas.audit-checkpoint+json"
EXPORT_FORMAT = "civitas-audit-export"
EXPORT_VERSION = 1
# The fields an event hash covers, in the order docs/audit.md lists them; the
# hashed document is a JSON object, so its keys are sorted regardless.
HASHED_FIELDS = (
    "seq",
    "created_at",
    "actor_label",
    "agency_slug",
    "action",
    "object_type",
    "object_id",
    "payload",
    "prev_hash",
)
_HEX = frozenset("0123456789abcdef")


class VerificationError(Exception):
    """A signature, envelope, checkpoint or export line failed verification."""


# --- Canonical JSON ----------------------------------------------------------


def format_timestamp(value: dt.datetime) -> str:
    """Render an aware datetime as UTC ISO-8601 with microseconds and ``Z``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime in audit data: give it a time zone")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_value(value: Any) -> Any:
    """Convert ``value`` to the JSON-native form the chain hashes."""
    # bool before int: bool is an int subclass and must stay true/false.
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and Infinity are not allowed in audit data")
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"audit data keys must be strings, not {key!r}")
            out[str.__str__(key)] = canonical_value(item)
        return out
    if isinstance(value, list | tuple):
        return [canonical_value(item) for item in value]
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError("NaN and Infinity are not allowed in audit data")
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(
        f"{type(value).__name__} is not allowed in audit data: convert it explicitly"
    )


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` as canonical JSON bytes (the one form that is hashed)."""
    text = json.dumps(
        canonical_value(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("audit data holds a string that is not valid Unicode") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def parse_json(text: str | bytes) -> Any:
    """Parse JSON, refusing the NaN/Infinity extensions Python accepts."""
    if isinstance(text, bytes | bytearray):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    return _DECODER.decode(text)


def hashed_document(event: Mapping[str, Any]) -> dict[str, Any]:
    """The object whose canonical JSON is hashed: exactly ``HASHED_FIELDS``."""
    doc = {name: event[name] for name in HASHED_FIELDS}
    if isinstance(doc["created_at"], dt.datetime):
        doc["created_at"] = format_timestamp(doc["created_at"])
    return doc


def event_hash(event: Mapping[str, Any]) -> str:
    """SHA-256 (lowercase hex) of the canonical JSON of the event's hashed fields."""
    return hashlib.sha256(canonical_json(hashed_document(event))).hexdigest()


def is_hash(value: Any) -> bool:
    """True for a 64-character lowercase hex string."""
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


# --- Merkle tree (RFC 9162 2.1; proofs are built by audit.merkle) --------------

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def leaf_hash(event_hash: str) -> str:
    """SHA-256(0x00 || leaf), the leaf being the event's 32-byte chain hash."""
    return hashlib.sha256(b"\x00" + bytes.fromhex(event_hash)).hexdigest()


def node_hash(left: str, right: str) -> str:
    """SHA-256(0x01 || left || right) of two child hashes."""
    return hashlib.sha256(b"\x01" + bytes.fromhex(left + right)).hexdigest()


def _walk(fn: int, sn: int, fr: bytes, sr: bytes, path: list[bytes]) -> Any:
    """The loop of RFC 9162 2.1.3.2 step 4 and 2.1.4.2 step 6: (fr, sr, sn)."""
    for c in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr = hashlib.sha256(b"\x01" + c + fr).digest()
            sr = hashlib.sha256(b"\x01" + c + sr).digest()
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = hashlib.sha256(b"\x01" + sr + c).digest()
        fn, sn = fn >> 1, sn >> 1
    return fr, sr, sn


def verify_inclusion(leaf: str, index: int, size: int, path: Any, root: str) -> bool:
    """True if ``path`` proves leaf hash ``leaf`` is leaf ``index`` of tree ``root``."""
    if not (isinstance(path, list) and all(map(is_hash, [leaf, root, *path]))):
        return False
    if not (type(index) is int and type(size) is int and 0 <= index < size):
        return False
    start = bytes.fromhex(leaf)
    end = _walk(index, size - 1, start, start, [bytes.fromhex(p) for p in path])
    return end is not None and end[2] == 0 and end[1].hex() == root


def verify_consistency(
    first: int, second: int, first_root: str, second_root: str, path: Any
) -> bool:
    """True if ``path`` proves tree ``second_root`` extends ``first_root`` (2.1.4.2)."""
    if not (
        isinstance(path, list) and all(map(is_hash, [first_root, second_root, *path]))
    ):
        return False
    if not (type(first) is int and type(second) is int and 0 <= first <= second):
        return False
    if first in (0, second):
        empty = first_root == (EMPTY_ROOT if first == 0 else second_root)
        return not path and empty
    hashes = [bytes.fromhex(p) for p in path]
    if not hashes:
        return False
    if first & (first - 1) == 0:
        hashes.insert(0, bytes.fromhex(first_root))
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    end = _walk(fn, sn, hashes[0], hashes[0], hashes[1:]) or (b"", b"", 1)
    return end[2] == 0 and end[0].hex() == first_root and end[1].hex() == second_root


class TreeEdge:
    """A tree's right edge: a subtree hash per set bit of ``size``, lowest first."""

    def __init__(self, size: int = 0, hashes: Iterable[str] = ()) -> None:
        self.size, self.hashes = size, list(hashes)
        if len(self.hashes) != bin(size).count("1"):
            raise ValueError("the tree edge does not match the tree size")

    def push(self, leaf: str, made: list[tuple[int, int, str]] | None = None) -> None:
        """Add leaf hash ``leaf``; the subtrees it completes go to ``made`` if given."""
        index, carry, level = self.size, leaf, 0
        while (index >> level) & 1:
            carry = node_hash(self.hashes.pop(0), carry)
            level += 1
            if made is not None:
                made.append((level, index >> level, carry))
        self.hashes.insert(0, carry)
        self.size += 1

    def root(self) -> str:
        """MTH of the tree (the hash of nothing when empty)."""
        root = self.hashes[0] if self.hashes else EMPTY_ROOT
        for left in self.hashes[1:]:
            root = node_hash(left, root)
        return root


# --- DSSE envelopes ----------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature covers."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def b64decode(text: Any) -> bytes:
    """Decode standard or URL-safe base64 (DSSE verifiers must accept both)."""
    if not isinstance(text, str):
        raise VerificationError("base64 field is not a string")
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise VerificationError("malformed base64") from exc


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM (SubjectPublicKeyInfo)."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise VerificationError("not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError("the public key is not an Ed25519 key")
    return key


def public_key_pem_of(key: Ed25519PublicKey) -> str:
    """The PEM (SubjectPublicKeyInfo) text of an Ed25519 public key."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_id(key: Ed25519PublicKey) -> str:
    """The key id: lowercase hex SHA-256 of the DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def verify_envelope(
    envelope: Any,
    public_key: Ed25519PublicKey | str | bytes,
    *,
    payload_type: str | None = None,
) -> bytes:
    """Return the payload of a DSSE envelope signed by ``public_key``."""
    if not isinstance(public_key, Ed25519PublicKey):
        public_key = load_public_key(public_key)
    if not isinstance(envelope, Mapping):
        raise VerificationError("the envelope is not a JSON object")
    kind = envelope.get("payloadType")
    signatures = envelope.get("signatures")
    if not isinstance(kind, str) or not isinstance(signatures, list):
        raise VerificationError("the envelope lacks payloadType or signatures")
    if payload_type is not None and kind != payload_type:
        raise VerificationError(f"unexpected payloadType {kind!r}")
    payload = b64decode(envelope.get("payload"))
    message = pae(kind, payload)
    wanted = key_id(public_key)
    for signature in signatures:
        if not isinstance(signature, Mapping):
            continue
        keyid = signature.get("keyid") or ""
        if keyid and keyid != wanted:
            continue
        try:
            public_key.verify(b64decode(signature.get("sig")), message)
        except (InvalidSignature, VerificationError):
            continue
        return payload
    raise VerificationError("no signature verifies with the given public key")


# --- Checkpoints -------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A chain head (seq, head_hash) whose signature has been checked."""

    seq: int
    head_hash: str
    created_at: str
    # The Merkle root of the first ``seq`` events (a signed tree head), if signed.
    root_hash: str | None = None


def open_checkpoint(
    envelope: Any,
    public_key: Ed25519PublicKey | str | bytes,
    *,
    stated_seq: Any = None,
    stated_head_hash: Any = None,
) -> Checkpoint:
    """Authenticate a checkpoint envelope and return the head it signs."""
    payload = verify_envelope(
        envelope, public_key, payload_type=CHECKPOINT_PAYLOAD_TYPE
    )
    try:
        body = parse_json(payload)
    except ValueError as exc:
        raise VerificationError("the checkpoint payload is not JSON") from exc
    if not isinstance(body, dict):
        raise VerificationError("the checkpoint payload is not a JSON object")
    seq, head_hash = body.get("seq"), body.get("head_hash")
    if (
        not isinstance(seq, int)
        or isinstance(seq, bool)
        or seq < 1
        or not is_hash(head_hash)
    ):
        raise VerificationError("the checkpoint payload lacks a valid seq or head_hash")
    root_hash = body.get("root_hash")
    if root_hash is not None and (
        not is_hash(root_hash) or body.get("tree_size") != seq
    ):
        raise VerificationError("the checkpoint payload has a malformed tree head")
    if stated_seq is not None and stated_seq != seq:
        raise VerificationError(
            f"checkpoint states seq {stated_seq} but its signature covers seq {seq}"
        )
    if stated_head_hash is not None and stated_head_hash != head_hash:
        raise VerificationError(
            f"checkpoint at seq {seq} states a head hash its signature does not cover"
        )
    return Checkpoint(
        seq=seq,
        head_hash=head_hash,
        created_at=str(body.get("created_at")),
        root_hash=root_hash,
    )


# --- Chain verification ------------------------------------------------------


@dataclass
class ChainReport:
    """The outcome of verifying a chain (or a partial export of one)."""

    ok: bool
    events: int
    first_bad_seq: int | None
    reason: str | None
    checkpoints_ok: bool
    checkpoints: int = 0
    last_seq: int = 0
    head_hash: str | None = None
    partial: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The five figures the API and ``verify_audit`` report."""
        return {
            "ok": self.ok,
            "events": self.events,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "checkpoints_ok": self.checkpoints_ok,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every figure, for ``--json`` output."""
        return asdict(self)


class ChainVerifier:
    """Recompute a chain fed event by event, in seq order."""

    def __init__(
        self,
        *,
        partial: bool = False,
        start_seq: int = 0,
        start_hash: str = GENESIS_HASH,
        start_frontier: TreeEdge | None = None,
    ) -> None:
        self.partial = partial
        # Full runs recompute the Merkle tree's right edge, to check signed roots.
        self.frontier = start_frontier
        if self.frontier is None and start_seq == 0 and not partial:
            self.frontier = TreeEdge()
        self._roots: dict[int, str] = {}
        self.proven = 0
        self.require_proofs = False  # a partial export that says it carries them
        self.events = 0
        # A run may resume after a trusted point (a verified checkpoint).
        self.last_seq = start_seq
        self.last_hash = start_hash
        self.first_bad_seq: int | None = None
        self.reason: str | None = None
        self.checkpoint_problems: list[str] = []
        self._checkpoints: dict[int, str] = {}
        self._checkpoint_count = 0

    @property
    def failed(self) -> bool:
        """True once a link or hash failed."""
        return self.first_bad_seq is not None

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Hold an authenticated checkpoint to compare with the chain."""
        self._checkpoint_count += 1
        known = self._checkpoints.get(checkpoint.seq)
        if known is not None and known != checkpoint.head_hash:
            self.checkpoint_problems.append(
                f"two signed checkpoints disagree on the head at seq {checkpoint.seq}"
            )
        self._checkpoints.setdefault(checkpoint.seq, checkpoint.head_hash)
        if checkpoint.root_hash is not None:
            self._roots.setdefault(checkpoint.seq, checkpoint.root_hash)

    def reject_checkpoint(self, problem: str) -> None:
        """Count a checkpoint that failed authentication."""
        self._checkpoint_count += 1
        self.checkpoint_problems.append(problem)

    def _check_end(self, last_seq: int | None, head_hash: str | None) -> None:
        beyond = [seq for seq in self._checkpoints if seq > self.last_seq]
        if beyond:
            self._fail(
                self.last_seq + 1,
                f"chain ends at seq {self.last_seq} but a signed checkpoint "
                f"covers seq {max(beyond)} (events were removed)",
            )
        elif last_seq is not None and last_seq > self.last_seq:
            self._fail(
                self.last_seq + 1,
                f"chain ends at seq {self.last_seq} but its head says "
                f"{last_seq} (events were removed)",
            )
        elif last_seq is not None and last_seq < self.last_seq:
            self._fail(
                last_seq + 1,
                f"events continue past seq {last_seq}, where the head says the "
                "chain ends",
            )
        elif head_hash is not None and head_hash != self.last_hash:
            self._fail(
                self.last_seq,
                f"the head hash differs from the hash of seq {self.last_seq}",
            )

    def _fail(self, seq: int, reason: str) -> None:
        if self.first_bad_seq is None:
            self.first_bad_seq = seq
            self.reason = reason

    def add(self, event: Mapping[str, Any]) -> None:
        """Check one event; the first failure is kept as ``first_bad_seq``."""
        if self.failed:
            return
        seq = event.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            self._fail(self.last_seq + 1, f"event after seq {self.last_seq} has no seq")
            return
        self.events += 1
        expected = self.last_seq + 1
        if self.partial:
            if seq <= self.last_seq:
                self._fail(seq, f"seq {seq} is out of order (after {self.last_seq})")
                return
        elif seq != expected:
            self._fail(expected, f"seq {expected} is missing (found seq {seq} next)")
            return
        prev_hash, stored = event.get("prev_hash"), event.get("hash")
        if (not self.partial or seq == expected) and prev_hash != self.last_hash:
            what = "the genesis hash" if seq == 1 else f"the hash of seq {seq - 1}"
            self._fail(seq, f"seq {seq}: prev_hash is not {what} (link broken)")
            return
        try:
            # Parsed JSON is canonical already: serialise, skip canonical_value.
            text = _ENCODER.encode(hashed_document(event)).encode("utf-8")
            computed = hashlib.sha256(text).hexdigest()
        except (KeyError, TypeError, ValueError) as exc:
            self._fail(seq, f"seq {seq}: cannot be hashed ({exc})")
            return
        if computed != stored:
            self._fail(
                seq, f"seq {seq}: content does not match its hash (event altered)"
            )
            return
        signed = self._checkpoints.get(seq)
        if signed is not None and signed != computed:
            self._fail(
                seq,
                f"seq {seq}: recomputed head differs from the signed checkpoint "
                "(history up to this seq was rewritten)",
            )
            return
        self.last_seq, self.last_hash = seq, computed
        self._check_tree(seq, computed, event.get("proof"))

    def _check_tree(self, seq: int, computed: str, proof: Any) -> None:
        """Grow the Merkle tree (full run) or check the event's inclusion proof."""
        if self.frontier is not None and not self.partial:
            self.frontier.push(leaf_hash(computed))
            root = self._roots.get(seq)
            if root is not None and root != self.frontier.root():
                self._fail(seq, f"seq {seq}: Merkle root differs from signed tree head")
            return
        if proof is None:
            if self.require_proofs:
                self._fail(seq, f"seq {seq}: the inclusion proof is missing")
            return
        size = proof.get("tree_size") if isinstance(proof, Mapping) else None
        root = self._roots.get(size) if isinstance(size, int) else None
        if root is None or not verify_inclusion(
            leaf_hash(computed), seq - 1, size, proof.get("path") or [], root
        ):
            self._fail(seq, f"seq {seq}: no valid inclusion proof to a signed head")
            return
        self.proven += 1

    def finish(
        self,
        *,
        expected_last_seq: int | None = None,
        expected_head_hash: str | None = None,
    ) -> ChainReport:
        """Close the run: check the end of the chain and return the report."""
        checkpoints_ok = not self.checkpoint_problems
        if not self.failed and not self.partial:
            self._check_end(expected_last_seq, expected_head_hash)
        reason = self.reason
        if reason is None and not checkpoints_ok:
            reason = self.checkpoint_problems[0]
        notes = []
        if self.partial and self.proven and self.proven == self.events:
            notes.append(
                "partial export: every event is proven by an inclusion proof to a "
                "signed tree head of the whole log; completeness is not proven"
            )
        elif self.partial:
            notes.append(
                "partial export: each event matches its own hash and the "
                "checkpoints are authentic; membership in the signed chain and "
                "completeness are not proven (see docs/audit.md)"
            )
        return ChainReport(
            ok=not self.failed and checkpoints_ok,
            events=self.events,
            first_bad_seq=self.first_bad_seq,
            reason=reason,
            checkpoints_ok=checkpoints_ok,
            checkpoints=self._checkpoint_count,
            last_seq=self.last_seq,
            head_hash=None if self.partial else self.last_hash,
            partial=self.partial,
            notes=notes,
        )


# --- Export files ------------------------------------------------------------


def _lines(path: Path, skip: str = "\0") -> Iterator[tuple[int, dict[str, Any]]]:
    """The file's objects; lines starting with ``skip`` are not even parsed."""
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip() or line.startswith(skip):
                continue
            try:
                item = parse_json(line)
            except ValueError as exc:
                raise VerificationError(f"line {number} is not JSON") from exc
            if not isinstance(item, dict):
                raise VerificationError(f"line {number} is not a JSON object")
            yield number, item


def _envelope_of(item: Mapping[str, Any]) -> Any:
    """A checkpoint file may hold the bare envelope or an export line."""
    return item.get("envelope", item)


def verify_export(
    path: Path,
    *,
    public_key_pem: str | bytes | None = None,
    extra_checkpoints: Iterable[Mapping[str, Any]] = (),
) -> ChainReport:
    """Verify an export file (JSONL) as written by ``export_audit``."""
    header: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    checkpoint_lines = []
    for number, item in _lines(path, skip='{"type":"event"'):  # events: 2nd pass
        kind = item.get("type")
        if number == 1 or header is None:
            if kind != "header" or item.get("format") != EXPORT_FORMAT:
                raise VerificationError("the first line is not a Civitas export header")
            if item.get("version") != EXPORT_VERSION:
                version = item.get("version")
                raise VerificationError(f"unsupported export version {version!r}")
            header = item
        elif kind == "checkpoint":
            checkpoint_lines.append(item)
        elif kind == "end":
            end = item
    if header is None:
        raise VerificationError("the file is empty")
    key = load_public_key(public_key_pem or header.get("public_key_pem", ""))
    verifier = ChainVerifier(partial=bool(header.get("partial")))
    verifier.require_proofs = (
        verifier.partial and header.get("inclusion_proofs") is True
    )
    for item in [*checkpoint_lines, *extra_checkpoints]:
        try:
            verifier.add_checkpoint(
                open_checkpoint(
                    _envelope_of(item),
                    key,
                    stated_seq=item.get("seq"),
                    stated_head_hash=item.get("head_hash"),
                )
            )
        except VerificationError as exc:
            where = item.get("seq", "?")
            verifier.reject_checkpoint(f"checkpoint at seq {where} rejected: {exc}")
    for _number, item in _lines(path):
        if item.get("type") == "event":
            verifier.add(item)
            if verifier.failed:
                break
    up_to = header.get("up_to_seq")
    report = verifier.finish(expected_last_seq=up_to if not verifier.partial else None)
    if end is None and report.ok:
        report.ok = False
        report.reason = "the export has no end line (the file was cut short)"
    elif end is not None and not verifier.failed and end.get("events") != report.events:
        report.ok = False
        report.reason = (
            f"the end line counts {end.get('events')} events, the file holds "
            f"{report.events}"
        )
    if public_key_pem is None:
        report.notes.append(
            "checked against the public key inside the export; pass --key with a "
            "key obtained independently to prove who signed it"
        )
    return report


def _read_json_file(path: Path) -> Any:
    try:
        return parse_json(path.read_bytes())
    except ValueError as exc:
        raise VerificationError(f"{path} is not a JSON document") from exc


def _first_object(path: Path) -> Any:
    with path.open("r", encoding="utf-8") as handle:
        first = handle.readline()
    try:
        return parse_json(first)
    except ValueError:
        return None


def _print_report(report: ChainReport) -> None:
    if report.ok:
        scope = "partial export" if report.partial else "chain"
        print(
            f"OK: {scope} of {report.events} events verified "
            f"(last seq {report.last_seq}); {report.checkpoints} checkpoints authentic"
        )
    else:
        print(f"FAILED: {report.reason}")
        if report.first_bad_seq is not None:
            print(f"first bad seq: {report.first_bad_seq}")
        print(f"checkpoints authentic: {'yes' if report.checkpoints_ok else 'no'}")
    for note in report.notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m audit.verify",
        description="Verify a Civitas audit export (JSONL) or a signed envelope.",
    )
    parser.add_argument("file", type=Path, help="chain.jsonl or an envelope .json")
    parser.add_argument("--key", type=Path, help="the platform public key (PEM)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a checkpoint kept from earlier (envelope JSON); repeatable",
    )
    parser.add_argument(
        "--payload-type", help="for an envelope: the payloadType it must carry"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    try:
        key_pem = args.key.read_bytes() if args.key else None
        first = _first_object(args.file)
        if isinstance(first, dict) and first.get("type") == "header":
            extra = [_read_json_file(path) for path in args.checkpoint]
            report = verify_export(
                args.file, public_key_pem=key_pem, extra_checkpoints=extra
            )
            if args.json:
                print(json.dumps(report.to_dict(), indent=2))
            else:
                _print_report(report)
            return 0 if report.ok else 1
        envelope = _read_json_file(args.file)
        if not isinstance(envelope, dict) or "payloadType" not in envelope:
            raise VerificationError(f"{args.file} is neither an export nor an envelope")
        if key_pem is None:
            raise VerificationError("an envelope is verified against --key public.pem")
        key = load_public_key(key_pem)
    except (OSError, UnicodeDecodeError, VerificationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        payload = verify_envelope(envelope, key, payload_type=args.payload_type)
    except VerificationError as exc:
        if args.json:
            print(json.dumps({"ok": False, "reason": str(exc)}))
        else:
            print(f"FAILED: {exc}")
        return 1
    try:
        body: Any = parse_json(payload)
    except (ValueError, UnicodeDecodeError):
        body = base64.b64encode(payload).decode("ascii")
    if args.json:
        out = {"ok": True, "payloadType": envelope["payloadType"]}
        print(json.dumps({**out, "keyid": key_id(key), "payload": body}, indent=2))
    else:
        print(f"OK: signature by key {key_id(key)} over {envelope['payloadType']}")
        print(json.dumps(body, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
