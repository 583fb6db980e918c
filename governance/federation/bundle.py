"""The federation bundle: one tar archive, a manifest of digests, a DSSE signature.

Members (all JSON but the artifacts)::

    manifest.json          format, exporter key, model origin id, tree head
                           size and root, and the SHA-256 of every other member
    manifest.dsse.json     DSSE envelope over manifest.json's exact bytes,
                           signed with the exporter's platform key (Ed25519)
    metadata.json          model, version, licence, datasets, lineage, graph facts
    attestations.json      the exporter's evaluation and decision attestations
    events.json            the audit events about them, each with its inclusion
                           path to the signed tree head
    tree_head.json         the signed tree head (the checkpoint's envelope)
    artifacts/<name>       optionally, the version's artifact

``write_bundle`` builds it; ``open_bundle`` extracts it safely (the engine's
``extract_archive``: no traversal, no links, size caps) and checks it against
a peer's key, raising ``BundleRefused`` with a machine-readable reason. This
module touches no database: the services look the peer up and write.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.verify import (
    HASHED_FIELDS,
    VerificationError,
    b64decode,
    canonical_json,
    event_hash,
    leaf_hash,
    open_checkpoint,
    parse_json,
    verify_consistency,
    verify_envelope,
    verify_inclusion,
)
from engine.archive import BundleError, Limits, extract_archive

FORMAT = "civitas-federation-bundle"
FORMAT_VERSION = 1
PAYLOAD_TYPE = "application/vnd.civitas.federation-manifest+json"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.dsse.json"
JSON_MEMBERS = ("metadata.json", "attestations.json", "events.json", "tree_head.json")
# Optional: a consistency proof from the tree size the importer last saw.
CONSISTENCY = "consistency.json"
EVENT_FIELDS = (*HASHED_FIELDS, "hash")
LIMITS = Limits(max_files=64, max_total_bytes=4 * 1024**3)
REASONS = (
    "bad_signature",
    "unknown_key",
    "digest_mismatch",
    "bad_proof",
    "replayed",
    "malformed",
)


class BundleRefused(Exception):
    """A bundle that is not imported; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class OpenedBundle:
    """A bundle whose signature, digests and proofs have been checked."""

    manifest: dict[str, Any]
    metadata: dict[str, Any]
    attestations: list[dict[str, Any]]
    events: list[dict[str, Any]]
    tree_head: dict[str, Any]
    artifacts: dict[str, Path]
    consistency: dict[str, Any] | None = None

    @property
    def tree_size(self) -> int:
        return self.manifest["tree_size"]


def sha256_hex(data: bytes) -> str:
    """SHA-256 of bytes, lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def _json_bytes(value: Any) -> bytes:
    return canonical_json(value)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def write_bundle(
    *,
    out,
    parts: dict[str, Any],
    header: dict[str, Any],
    artifacts: Iterable[tuple[str, Callable[[], Any]]] = (),
    sign: Callable[[bytes, str], dict[str, Any]],
) -> dict[str, Any]:
    """Write the signed bundle to the binary file ``out``; return its manifest.

    ``parts`` maps each of ``JSON_MEMBERS`` (and optionally ``CONSISTENCY``)
    to its value; ``header`` holds
    the manifest's own fields (exporter, model, tree_size, root_hash);
    ``artifacts`` yields (file name, opener of a binary file); ``sign``
    is ``audit.signing.sign_envelope``.
    """
    members = {name: _json_bytes(value) for name, value in parts.items()}
    digests = {name: sha256_hex(data) for name, data in members.items()}
    with tempfile.TemporaryDirectory() as tmp:
        spooled: list[tuple[str, Path]] = []
        for name, opener in artifacts:
            path, digest = Path(tmp) / f"a{len(spooled)}", hashlib.sha256()
            with opener() as src, path.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
            digests[f"artifacts/{name}"] = digest.hexdigest()
            spooled.append((f"artifacts/{name}", path))
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            **header,
            "members": digests,
        }
        manifest_bytes = _json_bytes(manifest)
        envelope = sign(manifest_bytes, PAYLOAD_TYPE)
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            _add(tar, MANIFEST, manifest_bytes)
            _add(tar, SIGNATURE, _json_bytes(envelope))
            for name, data in members.items():
                _add(tar, name, data)
            for name, path in spooled:
                tar.add(str(path), arcname=name, recursive=False)
    return manifest


# --- Reading ------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return parse_json(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise BundleRefused("malformed", f"{path.name} is not JSON.") from exc


def signer_key_id(root: Path) -> str:
    """The key id the bundle's signature names (to find the peer)."""
    envelope = _read_json(root / SIGNATURE)
    try:
        return str(envelope["signatures"][0]["keyid"])
    except (KeyError, IndexError, TypeError) as exc:
        raise BundleRefused("malformed", "The signature names no key.") from exc


def extract(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` safely into the new directory ``dest``; return it."""
    try:
        names = extract_archive(archive, dest, limits=LIMITS)
    except BundleError as exc:
        raise BundleRefused("malformed", exc.message) from exc
    if MANIFEST not in names or SIGNATURE not in names:
        raise BundleRefused("malformed", "The bundle lacks its signed manifest.")
    return dest


def _check_signature(root: Path, public_key_pem: str) -> dict[str, Any]:
    envelope = _read_json(root / SIGNATURE)
    manifest_bytes = (root / MANIFEST).read_bytes()
    try:
        payload = verify_envelope(envelope, public_key_pem, payload_type=PAYLOAD_TYPE)
    except VerificationError as exc:
        raise BundleRefused("bad_signature", f"The signature fails: {exc}") from exc
    if payload != manifest_bytes:
        raise BundleRefused("bad_signature", "The signature covers another manifest.")
    manifest = _read_json(root / MANIFEST)
    ok = isinstance(manifest, dict) and manifest.get("format") == FORMAT
    if not ok or not isinstance(manifest.get("members"), dict):
        raise BundleRefused("malformed", "The manifest is not a federation manifest.")
    if not isinstance(manifest.get("tree_size"), int):
        raise BundleRefused("malformed", "The manifest states no tree size.")
    return manifest


def _check_digests(root: Path, manifest: dict[str, Any]) -> None:
    listed = set(manifest["members"]) | {MANIFEST, SIGNATURE}
    present = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    if present != listed or not set(JSON_MEMBERS) <= listed:
        raise BundleRefused(
            "digest_mismatch", "The archive's members differ from the manifest's."
        )
    for name, expected in manifest["members"].items():
        if file_sha256(root / name) != expected:
            raise BundleRefused("digest_mismatch", f"{name} does not match its digest.")


def _check_proofs(
    manifest: dict[str, Any], head: Any, events: Any, public_key_pem: str
) -> None:
    try:
        checkpoint = open_checkpoint(head.get("envelope"), public_key_pem)
    except (VerificationError, AttributeError) as exc:
        raise BundleRefused("bad_proof", f"The tree head is not signed: {exc}") from exc
    size, root = manifest["tree_size"], checkpoint.root_hash
    if checkpoint.seq != size or root is None or root != manifest.get("root_hash"):
        raise BundleRefused("bad_proof", "The signed tree head is not the manifest's.")
    if not isinstance(events, list):
        raise BundleRefused("malformed", "events.json is not a list.")
    for event in events:
        try:
            proof = event.pop("proof")
            ok = event_hash(event) == event["hash"] and verify_inclusion(
                leaf_hash(event["hash"]), event["seq"] - 1, size, proof, root
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            ok = False
        if not ok:
            seq = event.get("seq") if isinstance(event, dict) else None
            raise BundleRefused("bad_proof", f"Event {seq} is not in the signed tree.")


def _check_attestations(attestations: Any, public_key_pem: str) -> None:
    if not isinstance(attestations, list):
        raise BundleRefused("malformed", "attestations.json is not a list.")
    for item in attestations:
        try:
            payload = verify_envelope(item["envelope"], public_key_pem)
            statement = parse_json(b64decode(item["envelope"]["payload"]))
        except (VerificationError, KeyError, TypeError, ValueError) as exc:
            raise BundleRefused(
                "bad_signature", "An attestation is not signed by the peer."
            ) from exc
        if statement != item.get("statement") or sha256_hex(payload) != item.get(
            "statement_sha256"
        ):
            raise BundleRefused("bad_signature", "An attestation's statement differs.")


def open_bundle(root: Path, public_key_pem: str) -> OpenedBundle:
    """Check an extracted bundle against the peer's key; raise BundleRefused."""
    manifest = _check_signature(root, public_key_pem)
    _check_digests(root, manifest)
    metadata, attestations, events, head = (
        _read_json(root / name) for name in JSON_MEMBERS
    )
    _check_proofs(manifest, head, events, public_key_pem)
    _check_attestations(attestations, public_key_pem)
    if not isinstance(metadata, dict) or "version" not in metadata:
        raise BundleRefused("malformed", "metadata.json names no version.")
    artifacts = {
        name.removeprefix("artifacts/"): root / name
        for name in manifest["members"]
        if name.startswith("artifacts/")
    }
    consistency = None
    if CONSISTENCY in manifest["members"]:
        consistency = _read_json(root / CONSISTENCY)
        if not isinstance(consistency, dict):
            raise BundleRefused("malformed", f"{CONSISTENCY} is not an object.")
    return OpenedBundle(
        manifest, metadata, attestations, events, head, artifacts, consistency
    )


def check_consistency(
    opened: OpenedBundle, last_size: int, last_root: str
) -> bool | None:
    """Whether the bundle proves its tree extends the one last imported.

    None when the bundle carries no proof from ``last_size``; raises
    BundleRefused ``bad_proof`` for a proof from that size that fails.
    """
    proof = opened.consistency
    if not proof or proof.get("first") != last_size:
        return None
    ok = proof.get("second") == opened.tree_size and verify_consistency(
        last_size,
        opened.tree_size,
        last_root,
        opened.manifest.get("root_hash"),
        proof.get("path"),
    )
    if not ok:
        raise BundleRefused(
            "bad_proof",
            f"The tree of {opened.tree_size} events does not extend the "
            f"{last_size} events imported before.",
        )
    return True


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
