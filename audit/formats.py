"""The formats of the Civitas audit chain: canonical JSON, event hashes, the
Merkle tree (RFC 9162), DSSE envelopes and signed checkpoints.

Half of the standalone verifier (``audit/verify.py`` is the other half and its
command): like it, this file imports Python 3.11+ and ``cryptography`` only,
never Django or the project, and the platform imports it, so these formats are
defined once, here (docs/audit.md; golden vectors in tests/audit/test_verify.py).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring
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


# The C encoder behind ``_ENCODER.encode``, built once instead of per event
# (same bytes: same function, same options; absent without CPython's _json).
_C_ENCODE = c_make_encoder and c_make_encoder(
    None, _ENCODER.default, encode_basestring, None, ":", ",", True, False, False
)


def event_digest(event: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of the event's hashed fields (as
    ``event_hash``, without building the encoder per event)."""
    doc = hashed_document(event)
    text = "".join(_C_ENCODE(doc, 0)) if _C_ENCODE else _ENCODER.encode(doc)
    return hashlib.sha256(text.encode("utf-8")).digest()


# The hashed document's canonical JSON (keys sorted) with the payload's JSON
# text in its place; ``spliced_digest`` fills it in this key order.
_SPLICED = "{" + ",".join(f'"{name}":%s' for name in sorted(HASHED_FIELDS)) + "}"


def spliced_digest(event: Mapping[str, Any], payload: str) -> bytes | None:
    """The event's digest computed around ``payload``, the payload's JSON text
    as stored or exported, if it equals the event's hash; else None.

    The platform writes payloads as canonical JSON, so the hashed document is
    that text with the other fields around it: no parsing, no re-encoding. A
    match proves that the text is exactly what was hashed; anything else
    (another JSON form, a value that is not a string, an altered event) is
    for ``event_digest`` on the parsed event to decide.
    """
    q, e = encode_basestring, event  # the JSON string form the encoder uses
    try:
        text = _SPLICED % (
            q(e["action"]), q(e["actor_label"]), q(e["agency_slug"]),
            q(e["created_at"]), q(e["object_id"]), q(e["object_type"]), payload,
            q(e["prev_hash"]), int.__repr__(e["seq"]),
        )  # fmt: skip
        digest = hashlib.sha256(text.encode("utf-8")).digest()
    except (KeyError, TypeError, ValueError):
        return None
    return digest if digest.hex() == e.get("hash") else None


# An event line exactly as the platform exports it (``audit.services``): type,
# the hashed fields in ``HASHED_FIELDS`` order, hash; compact, no inclusion
# proof. It is recognised by this pattern instead of being parsed: parsing was
# the larger part of verifying a line, and no maintained library parses JSON
# keeping each value's text.
_STRING = r'("(?:[^"\\]++|\\.)*+")'  # a JSON string token as written
_WRITTEN_EVENT = re.compile(
    r'\{"type":"event","seq":([1-9][0-9]*+)'
    + "".join(f',"{name}":{_STRING}' for name in HASHED_FIELDS[1:7])
    + r',"payload":(.*),"prev_hash":("[0-9a-f]{64}"),"hash":"([0-9a-f]{64})"\}\n?\Z',
    re.DOTALL,
)
_DIGEST = object()  # the key under which ``written_event`` leaves the digest


def written_event(line: str) -> dict[Any, Any] | None:
    """The chain fields of an export line in the platform's own form whose
    text matches its hash, without parsing it; else None (parse the line).

    The line's tokens, as written, are put in canonical order around its
    payload's text and hashed. A match proves the line is made of the hashed
    document's own tokens (a canonical document has one value per key and one
    way of writing each), so it says exactly what was hashed.
    """
    match = _WRITTEN_EVENT.match(line)
    if match is None:
        return None
    seq, stamp, actor, agency, action, kind, ident, payload, prev, hexdigest = (
        match.groups()
    )
    text = _SPLICED % (action, actor, agency, stamp, ident, kind, payload, prev, seq)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    if digest.hex() != hexdigest:
        return None
    return {
        "type": "event",
        "seq": int(seq),
        "prev_hash": prev[1:-1],
        "hash": hexdigest,
        _DIGEST: digest,
    }


def line_digest(event: Mapping[Any, Any]) -> bytes:
    """``event_digest``, or the digest ``written_event`` computed already."""
    digest = event.get(_DIGEST)
    return event_digest(event) if digest is None else digest


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

    def extend(self, leaves: bytes, roots: Mapping[int, str], seq: int) -> int | None:
        """Push 32-byte leaf hashes (leaf ``seq`` first); return the first seq
        at which the root differs from ``roots[seq]`` (None if none does)."""
        sha, size, bad = hashlib.sha256, self.size, None
        edge = [bytes.fromhex(h) for h in reversed(self.hashes)]  # lowest last
        for start in range(0, len(leaves), 32):
            carry, n = leaves[start : start + 32], size
            while n & 1:
                carry, n = sha(b"\x01" + edge.pop() + carry).digest(), n >> 1
            edge.append(carry)
            size += 1
            signed = roots.get(seq)
            if signed is not None:
                root = edge[-1]
                for left in edge[-2::-1]:
                    root = sha(b"\x01" + left + root).digest()
                if root.hex() != signed:
                    bad = seq
                    break
            seq += 1
        self.size, self.hashes = size, [h.hex() for h in reversed(edge)]
        return bad

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
