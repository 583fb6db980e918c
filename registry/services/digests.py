"""Re-verifying the digests of stored files: model bundles and dataset files.

A stored file is content-addressed by the SHA-256 recorded when it was
verified. Storage can still rot or be tampered with, so every stored file is
hashed again on a schedule (``civitas.artifact_digest_sweep``): streamed
from the artifact store through SHA-256, never held in memory. A model
bundle whose bytes no longer match is refused (``artifact_state`` becomes
``failed``, so no evaluation or download trusts it) and
``model_version.digest_mismatch`` records the expected and the actual
digest; governance then suspends the use cases that rely on it and tells
their reviewers (``governance.services.digests``). A dataset file that no
longer matches is refused the same way (``dataset_version.digest_mismatch``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db import transaction

from audit import services as audit
from registry.models import ArtifactState, DatasetVersion, ModelVersion
from registry.storage import CHUNK_SIZE, artifact_storage


@dataclass(frozen=True)
class DigestMismatch:
    """A stored file whose bytes no longer hash to the recorded digest."""

    object_id: int
    storage_key: str
    expected: str
    actual: str


def stored_digest(key: str) -> str:
    """SHA-256 of a stored file, streamed; ``"missing"`` when it is gone."""
    digest = hashlib.sha256()
    storage = artifact_storage()
    try:
        with storage.open(key, "rb") as source:
            while chunk := source.read(CHUNK_SIZE):
                digest.update(chunk)
    except FileNotFoundError:
        return "missing"
    return digest.hexdigest()


def model_version_digest_candidates() -> list[int]:
    """Ids of the versions whose stored bundle is in use (``available``)."""
    return list(
        ModelVersion.objects.filter(artifact_state=ArtifactState.AVAILABLE)
        .exclude(artifact_key="")
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def model_version_digest_check(*, version_id: int) -> DigestMismatch | None:
    """Hash a version's stored bundle again; the mismatch, or None if it holds.

    Reads only (the hashing runs outside any transaction); the caller
    records a mismatch with ``model_version_digest_mismatch``.
    """
    version = (
        ModelVersion.objects.filter(pk=version_id)
        .values("artifact_key", "artifact_digest")
        .first()
    )
    if version is None or not version["artifact_key"]:
        return None
    actual = stored_digest(version["artifact_key"])
    if actual == version["artifact_digest"]:
        return None
    return DigestMismatch(
        object_id=version_id,
        storage_key=version["artifact_key"],
        expected=version["artifact_digest"],
        actual=actual,
    )


@transaction.atomic
def model_version_digest_mismatch(*, mismatch: DigestMismatch) -> bool:
    """Refuse a version whose stored bundle no longer matches its digest.

    The platform acts (no actor). Under the version's row lock, and only if
    it is still ``available`` on the same stored object: ``artifact_state``
    becomes ``failed`` with the reason in ``artifact_error``, and
    ``model_version.digest_mismatch`` records the expected and actual
    digests. True if recorded now; False if already refused (safe to call
    twice). The caller holds the rows of the version's use cases first.
    """
    version = (
        ModelVersion.objects.select_for_update(of=("self",))
        .select_related("model__agency")
        .filter(
            pk=mismatch.object_id,
            artifact_state=ArtifactState.AVAILABLE,
            artifact_key=mismatch.storage_key,
        )
        .first()
    )
    if version is None:
        return False
    reason = (
        f"The stored bundle no longer matches its digest: expected "
        f"{mismatch.expected}, found {mismatch.actual}."
    )
    ModelVersion.objects.filter(pk=version.pk).update(
        artifact_state=ArtifactState.FAILED, artifact_error=reason
    )
    audit.record(
        actor=None,
        action="model_version.digest_mismatch",
        obj=version,
        agency=version.model.agency,
        payload={
            "model_version_id": version.pk,
            "storage_key": mismatch.storage_key,
            "expected": mismatch.expected,
            "actual": mismatch.actual,
        },
    )
    return True


def dataset_version_digest_sweep() -> list[DigestMismatch]:
    """Hash every stored dataset file again; refuse and record the mismatches."""
    found = []
    stored = (
        DatasetVersion.objects.filter(artifact_state=ArtifactState.AVAILABLE)
        .exclude(storage_key="")
        .order_by("pk")
        .values_list("pk", "storage_key", "digest")
    )
    for pk, key, expected in list(stored):
        actual = stored_digest(key)
        if actual == expected:
            continue
        mismatch = DigestMismatch(
            object_id=pk, storage_key=key, expected=expected, actual=actual
        )
        if _dataset_version_refuse(mismatch):
            found.append(mismatch)
    return found


@transaction.atomic
def _dataset_version_refuse(mismatch: DigestMismatch) -> bool:
    """Refuse a dataset version whose file no longer matches; record it."""
    version = (
        DatasetVersion.objects.select_for_update(of=("self",))
        .select_related("dataset__agency")
        .filter(
            pk=mismatch.object_id,
            artifact_state=ArtifactState.AVAILABLE,
            storage_key=mismatch.storage_key,
        )
        .first()
    )
    if version is None:
        return False
    DatasetVersion.objects.filter(pk=version.pk).update(
        artifact_state=ArtifactState.FAILED,
        artifact_error=f"The stored file no longer matches its digest "
        f"{mismatch.expected} (found {mismatch.actual}).",
    )
    audit.record(
        actor=None,
        action="dataset_version.digest_mismatch",
        obj=version,
        agency=version.dataset.agency,
        payload={
            "dataset_version_id": version.pk,
            "storage_key": mismatch.storage_key,
            "expected": mismatch.expected,
            "actual": mismatch.actual,
        },
    )
    return True
