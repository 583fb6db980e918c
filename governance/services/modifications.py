"""Assessing how a derived model version differs from its base version.

When a version that names a ``base_version`` is released, the registry
queues ``civitas.modification_assess`` on commit; the worker calls
``modification_assess`` here. Both stored bundles are copied out (their
SHA-256 checked), unpacked under ``ARTIFACT_TMP_DIR`` and compared by
``engine.compare.run_compare`` in the engine's sandboxed child (the bundles
are as hostile as any upload), limited by ``CIVITAS_EVAL_MEMORY_BYTES`` and
``CIVITAS_EVAL_TIMEOUT_SECONDS``. The result, with the metric deltas of the
two versions' latest successful runs on shared suites, is written once as a
``ModificationAssessment`` and recorded in the audit chain. See
docs/modification.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from audit import services as audit
from config.exceptions import DomainError
from engine.archive import BundleError, materialise_bundle
from engine.compare import COMPARE_VERSION, CompareFailure, run_compare
from governance.models import AssessmentStatus, ModificationAssessment, PolicyTrigger
from governance.rules.modification import evaluation_deltas
from governance.services.policies import policy_evaluate_for_version
from registry.bundles import bundle_limits, stored_copy
from registry.models import ArtifactState, ModelVersion
from registry.storage import artifact_tmp_dir


def _unpacked(version: ModelVersion, scratch: Path) -> Path:
    """Unpack a version's stored bundle under ``scratch``; the copy is removed."""
    with stored_copy(key=version.artifact_key, sha256=version.artifact_digest) as path:
        return materialise_bundle(
            path, scratch / f"v{version.pk}", limits=bundle_limits()
        )


def _compare(version: ModelVersion, base: ModelVersion) -> dict[str, Any]:
    """The engine's comparison, or ``{"error_code", "error"}`` if it failed."""
    with tempfile.TemporaryDirectory(
        prefix="compare-", dir=artifact_tmp_dir()
    ) as directory:
        scratch = Path(directory)
        try:
            base_root = _unpacked(base, scratch)
            root = _unpacked(version, scratch)
            return run_compare(
                base_root,
                root,
                memory_bytes=settings.CIVITAS_EVAL_MEMORY_BYTES,
                timeout_s=settings.CIVITAS_EVAL_TIMEOUT_SECONDS,
            )
        except (DomainError, BundleError, CompareFailure) as exc:
            return {"error_code": exc.code, "error": exc.message}


def _fields(report: dict[str, Any]) -> dict[str, Any]:
    if "error_code" in report:
        return {
            "status": AssessmentStatus.FAILED,
            "error_code": str(report["error_code"])[:60],
            "error": report["error"],
        }
    weights = report["weights"]
    return {
        "status": AssessmentStatus.COMPLETED,
        "primary": report["primary"],
        "classes": report["classes"],
        "reasons": report["reasons"],
        "max_relative_change": weights["max_relative_change"],
        "overall_relative_change": weights["overall_relative_change"],
        "graph": report["graph"],
        "weights": weights,
        "tokenizer": report["tokenizer"],
        "compare_version": report.get("version", COMPARE_VERSION),
    }


def _assessable(version_id: int) -> ModelVersion | None:
    version = (
        ModelVersion.objects.select_related("model__agency", "base_version")
        .filter(pk=version_id, base_version__isnull=False)
        .first()
    )
    if version is None:
        return None
    base = version.base_version
    available = ArtifactState.AVAILABLE
    if not (
        version.artifact_state == base.artifact_state == available
        and version.artifact_key
        and base.artifact_key
    ):
        return None
    return version


def _existing(version: ModelVersion) -> ModificationAssessment | None:
    return ModificationAssessment.objects.filter(
        model_version_id=version.pk,
        base_version_id=version.base_version_id,
        artifact_digest=version.artifact_digest,
        base_artifact_digest=version.base_version.artifact_digest,
    ).first()


def modification_assess(
    *, version_id: int, actor=None
) -> ModificationAssessment | None:
    """Compare a released version with its released base; store and audit it.

    Returns None when the version has no base or either artifact is not
    available. Safe to run twice: an assessment of the same pair of digests
    is returned as it is (the unique constraint settles a race). A bundle
    that is refused or a comparison that runs out of memory or time is
    stored ``failed`` with its code, not raised. Records
    ``model_version.modification_assessed`` (actor: the platform unless
    given). A completed assessment checks the policies of every use case of
    the version again (trigger ``evaluation``: a ``substantial_modification``
    rule that now fails sends an approved use case back to review).
    """
    version = _assessable(version_id)
    if version is None:
        return None
    found = _existing(version)
    if found is not None:
        return found
    base = version.base_version
    fields = _fields(_compare(version, base))
    fields["evaluation_deltas"] = evaluation_deltas(version=version, base=base)
    try:
        with transaction.atomic():
            assessment = ModificationAssessment.objects.create(
                model_version=version,
                base_version=base,
                artifact_digest=version.artifact_digest,
                base_artifact_digest=base.artifact_digest,
                **fields,
            )
            audit.record(
                actor=actor,
                action="model_version.modification_assessed",
                obj=version,
                agency=version.model.agency,
                payload={
                    "assessment_id": assessment.pk,
                    "base_version_id": base.pk,
                    "sha256": version.artifact_digest,
                    "base_sha256": base.artifact_digest,
                    "status": assessment.status,
                    "primary": assessment.primary,
                    "classes": assessment.classes,
                    "max_relative_change": assessment.max_relative_change,
                    "error_code": assessment.error_code,
                },
            )
            if assessment.status == AssessmentStatus.COMPLETED:
                # Every use case of the version gets a fresh verdict; a failed
                # one sends an approved use case back to review.
                policy_evaluate_for_version(
                    model_version=version, trigger=PolicyTrigger.EVALUATION
                )
    except IntegrityError:
        return _existing(version)
    return assessment
