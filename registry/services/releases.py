"""Releasing an uploaded model bundle: the worker's self-test and its verdict.

An upload is stored ``pending`` (``artifacts.model_version_artifact_upload``);
``civitas.artifact_verify`` then runs here, on a worker, never in a web
request: the stored bundle is copied out (its SHA-256 checked on the way),
unpacked, inspected and self-tested in the engine's sandboxed child
(``registry.bundles.bundle_inspect``: every kind of model, bounded by
``CIVITAS_SELFTEST_TIMEOUT_SECONDS``), and the version is released or
failed under its row lock.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from config.celery import send_on_commit
from config.exceptions import Conflict, DomainError
from registry.bundles import InspectedBundle, bundle_inspect, graph_fields, stored_copy
from registry.models import ArtifactState, ModelVersion
from registry.storage import artifact_storage


def _locked_upload(version_id: int, key: str) -> ModelVersion | None:
    """The version, locked, if still pending on the same uploaded object."""
    return (
        ModelVersion.objects.select_for_update()
        .select_related("model__agency")
        .filter(
            pk=version_id,
            artifact_state=ArtifactState.PENDING,
            source_uri="",
            artifact_key=key,
        )
        .first()
    )


def refuse_failed_derivation(version: ModelVersion, action: str) -> None:
    """Raise ``Conflict`` (``derivation_failed``) for a failed platform derivation.

    ``action`` names what is refused ("evaluated", "scheduled",
    "exported"...). Such a version has no bundle and never will
    (``ModelVersion.derivation_failed``): evidence about it would describe
    a model that does not exist.
    """
    if version.derivation_failed:
        code = version.derivation_settings["failure_code"]
        raise Conflict(
            f"{version} is a derivation that failed ({code}): it has no bundle "
            f"and never will, so it cannot be {action}. Derive a new version "
            "or use its base version.",
            code="derivation_failed",
        )


MODIFICATION_TASK = "civitas.modification_assess"


def modification_assess_on_commit(version: ModelVersion) -> None:
    """Queue the comparison of a released derived version with its base."""
    if version.base_version_id is not None:
        send_on_commit(MODIFICATION_TASK, version_id=version.pk)


def _release(version: ModelVersion, inspected: InspectedBundle) -> str:
    """Release a locked, pending upload that passed; record it."""
    fields = {
        "artifact_state": ArtifactState.AVAILABLE,
        "artifact_error": "",
        "released_at": timezone.now(),
        "selftest": inspected.selftest,
        **graph_fields(inspected.facts),
    }
    for field, value in fields.items():
        setattr(version, field, value)
    version.save(update_fields=[*fields, "updated_at"])
    audit.record(
        actor=None,
        action="model_version.artifact_verified",
        obj=version,
        agency=version.model.agency,
        payload={
            "sha256": version.artifact_digest,
            "size": version.artifact_size,
            "format": version.artifact_format,
            "storage_key": version.artifact_key,
            "kind": inspected.facts.kind,
            "parameter_count": inspected.facts.parameter_count,
            "selftest_passed": inspected.selftest.get("passed"),
        },
    )
    modification_assess_on_commit(version)
    return ArtifactState.AVAILABLE


def _refuse(version: ModelVersion, *, code: str, reason: str) -> str:
    """Fail a locked, pending upload; its stored object is deleted on commit."""
    key, digest = version.artifact_key, version.artifact_digest
    version.artifact_state = ArtifactState.FAILED
    version.artifact_error = reason
    version.artifact_key = ""
    version.artifact_digest = ""
    version.save(
        update_fields=[
            "artifact_state", "artifact_error", "artifact_key", "artifact_digest",
            "updated_at",
        ]
    )  # fmt: skip
    audit.record(
        actor=None,
        action="model_version.artifact_verification_failed",
        obj=version,
        agency=version.model.agency,
        payload={"sha256": digest, "storage_key": key, "code": code, "reason": reason},
    )
    transaction.on_commit(lambda: artifact_storage().delete(key))
    return ArtifactState.FAILED


def uploaded_artifact_verify(*, version_id: int) -> str:
    """Self-test an uploaded, pending bundle on a worker; release or fail it.

    Success sets ``available`` and ``released_at`` and stores the self-test
    figures (``model_version.artifact_verified``). A bundle the engine
    refuses, a model that fails its self-test or does not finish it within
    ``CIVITAS_SELFTEST_TIMEOUT_SECONDS`` (``selftest_failed``), or stored
    bytes that are not the ones uploaded (``digest_mismatch``) end
    ``failed`` with a readable ``artifact_error``; the stored object is
    deleted and the agency may upload again
    (``model_version.artifact_verification_failed``, actor: the system).

    Safe to run twice: only a row still pending on the same stored object is
    changed, under its row lock. Returns the resulting state, or ``skipped``.
    """
    version = ModelVersion.objects.filter(
        pk=version_id, artifact_state=ArtifactState.PENDING, source_uri=""
    ).first()
    if version is None or not version.artifact_key:
        return "skipped"
    key = version.artifact_key
    refused: DomainError | None = None
    try:
        with stored_copy(key=key, sha256=version.artifact_digest) as path:
            inspected = bundle_inspect(path=path)
    except DomainError as e:
        refused = e
    with transaction.atomic():
        locked = _locked_upload(version_id, key)
        if locked is None:
            return "skipped"
        if refused is not None:
            return _refuse(
                locked,
                code=refused.code,
                reason=f"The bundle was refused ({refused.code}): {refused.message}",
            )
        return _release(locked, inspected)
