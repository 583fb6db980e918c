"""Quantised and optimised versions derived by the platform from an fp32 version.

``model_version_derive`` registers the new version at once (lineage: the
parent as ``base_version``, ``derivation = quantised``, the method and its
settings in ``derivation_settings``), pending, and queues
``civitas.model_version_derive`` on commit. On a worker,
``model_version_derive_execute`` copies the parent's bundle out of the store
(its SHA-256 checked), derives the quantised bundle in the engine's
sandboxed child (``engine.quantise``: the parent is hostile input; memory
``CIVITAS_EVAL_MEMORY_BYTES``, time ``CIVITAS_DERIVE_TIMEOUT_SECONDS``),
inspects and self-tests the result by the uploads' own code path
(``registry.bundles.bundle_inspect``), stores and releases it, and queues
an evaluation on every suite the parent has a succeeded run on.

The ``optimised`` method (``derivation = optimised``) goes the same way
with ``engine.optimise``: ONNX Runtime's transformer optimiser fuses the
graph in the sandboxed child, which keeps it only if every log-likelihood on
``engine.optimise.VERIFY_TEXTS`` agrees with the parent's within 1e-4
relative. A graph the optimiser does not recognise (``not_fused``) or whose
fusion moves a log-likelihood (``fusion_not_verified``) ends the version
``failed`` with that code in ``derivation_settings["failure_code"]``: no
artifact is stored, never an identical copy of the parent.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from config.celery import send_on_commit
from config.exceptions import Conflict, DomainError
from engine import optimise
from engine.bundle import sha256_file
from engine.quantise import (
    BLOCK_SIZES,
    DEFAULT_BLOCK_SIZE,
    QuantiseError,
    derive_bundle,
)
from engine.quantise import METHODS as QUANTISE_METHODS
from engine.quantise import Derivation as QuantiseDerivation
from engine.sandbox import EvaluationFailure
from governance.models import EvaluationSuite, RunStatus
from governance.services.evaluations import evaluation_request
from registry.bundles import bundle_inspect
from registry.models import (
    ArtifactState,
    DatasetVersion,
    Derivation,
    ModelVersion,
)
from registry.services.artifacts import model_version_artifact_derived
from registry.services.catalogue import model_version_create
from registry.storage import artifact_tmp_dir, copy_verified

DERIVE_TASK = "civitas.model_version_derive"
_QUANTISED_KINDS = frozenset({"int8", "int4", "mixed"})
METHODS = (*QUANTISE_METHODS, optimise.METHOD)
_DERIVED = (Derivation.QUANTISED, Derivation.OPTIMISED)


def _invalid(field: str, message: str, code: str) -> DomainError:
    return DomainError(
        message,
        code=code,
        fields={field: [{"code": code, "message": message}]},
    )


def _check_parent(parent: ModelVersion, method: str) -> None:
    """The parent must be a released fp32 version with its artifact."""
    if not parent.is_released or parent.artifact_state != ArtifactState.AVAILABLE:
        raise Conflict(
            "The version has no verified artifact yet; a version is derived "
            "from a released one.",
            code="artifact_not_available",
        )
    if method == optimise.METHOD and parent.derivation == Derivation.OPTIMISED:
        raise DomainError(
            "This version is already optimised; its graph is fused.",
            code="already_optimised",
        )
    if parent.derivation == Derivation.QUANTISED or (
        parent.quantisation in _QUANTISED_KINDS
    ):
        raise DomainError(
            "This version is already quantised; derive from its fp32 parent.",
            code="already_quantised",
        )
    if parent.quantisation != "fp32":
        raise DomainError(
            f"Only fp32 versions can be quantised; this one is "
            f"{parent.quantisation or 'not inspected'}.",
            code="not_fp32",
        )


def _check_calibration(
    actor, method: str, calibration: DatasetVersion | None
) -> DatasetVersion | None:
    """Static int8 needs a visible dataset version whose file is stored."""
    field = "calibration_dataset_version"
    if method != "static-int8":
        return None
    if calibration is None:
        raise _invalid(field, "Static int8 needs a calibration dataset.", "required")
    if not DatasetVersion.objects.visible_to(actor).filter(pk=calibration.pk).exists():
        raise _invalid(
            field,
            f'Invalid pk "{calibration.pk}" - object does not exist.',
            "does_not_exist",
        )
    if calibration.artifact_state != ArtifactState.AVAILABLE or not (
        calibration.storage_key and calibration.digest
    ):
        raise _invalid(
            field, "The calibration dataset has no verified file.", "no_file"
        )
    return calibration


@transaction.atomic
def model_version_derive(
    *,
    actor,
    parent: ModelVersion,
    method: str,
    version: str,
    calibration: DatasetVersion | None = None,
    block_size: int | None = None,
) -> ModelVersion:
    """Register a quantised or optimised version of ``parent``; queue its derivation.

    The parent's agency's members and maintainers (``model_version_create``
    checks). ``method`` is one of ``METHODS`` (``engine.quantise.METHODS``
    or ``optimised``, recorded as ``derivation = optimised``); static int8
    needs ``calibration`` (a visible dataset version with a stored file),
    int4 takes ``block_size`` (default 32). The new version copies the
    parent's licence, hosting and training facts; it is ``pending`` until
    the worker releases or fails it. Records
    ``model_version.derivation_requested``.

    Raises ``Conflict`` (``artifact_not_available``) for an unreleased
    parent, ``DomainError`` (``already_quantised``, ``already_optimised``,
    ``not_fp32``, field
    errors on the method, calibration or block size, ``Conflict`` on a
    duplicate version string).
    """
    if method not in METHODS:
        raise _invalid("method", f"Unknown method '{method}'.", "invalid_choice")
    if method == "int4":
        block_size = block_size or DEFAULT_BLOCK_SIZE
        if block_size not in BLOCK_SIZES:
            raise _invalid(
                "block_size", f"Choose one of {list(BLOCK_SIZES)}.", "invalid_choice"
            )
    else:
        block_size = None
    _check_parent(parent, method)
    calibration = _check_calibration(actor, method, calibration)
    optimised = method == optimise.METHOD
    derived = model_version_create(
        actor=actor,
        model=parent.model,
        version=version,
        licence=parent.licence,
        base_version=parent,
        derivation=Derivation.OPTIMISED if optimised else Derivation.QUANTISED,
        training_run=parent.training_run,
        training_jurisdiction=parent.training_jurisdiction,
        training_hardware=parent.training_hardware,
        hosting_jurisdiction=parent.hosting_jurisdiction,
        limitations=parent.limitations,
        risks=parent.risks,
        ethical_considerations=parent.ethical_considerations,
    )
    recorded = _requested_settings(parent, method, block_size)
    if calibration is not None:
        recorded["calibration_dataset_version"] = calibration.pk
        recorded["calibration_sha256"] = calibration.digest
    derived.derivation_settings = recorded
    derived.artifact_state = ArtifactState.PENDING
    derived.save(update_fields=["derivation_settings", "artifact_state", "updated_at"])
    audit.record(
        actor=actor,
        action="model_version.derivation_requested",
        obj=derived,
        agency=parent.model.agency,
        payload={"parent": parent.pk, "version": version, "settings": recorded},
    )
    send_on_commit(DERIVE_TASK, version_id=derived.pk)
    return derived


def _requested_settings(
    parent: ModelVersion, method: str, block_size: int | None
) -> dict:
    """What the derivation is asked to do, recorded before it runs."""
    if method == optimise.METHOD:
        return {
            "method": method,
            "opt_level": 0,
            "tolerance": optimise.TOLERANCE,
            "parent_sha256": parent.artifact_digest,
            "tool": optimise.TOOL,
        }
    return {
        **QuantiseDerivation(method, block_size).settings(),
        "parent_sha256": parent.artifact_digest,
        "tool": "onnxruntime.quantization",
    }


def _awaiting():
    """Derived versions still waiting for their bundle."""
    return ModelVersion.objects.filter(
        artifact_state=ArtifactState.PENDING,
        derivation__in=_DERIVED,
        artifact_key="",
    ).exclude(derivation_settings={})


def _pending(version_id: int) -> ModelVersion | None:
    versions = _awaiting().select_related("base_version", "model")
    return versions.filter(pk=version_id).first()


@transaction.atomic
def _fail(version_id: int, *, code: str, reason: str) -> str:
    """End a pending derived version ``failed`` with a readable reason."""
    version = (
        ModelVersion.objects.select_for_update()
        .select_related("model__agency")
        .filter(pk=version_id, artifact_state=ArtifactState.PENDING, artifact_key="")
        .first()
    )
    if version is None:
        return "skipped"
    version.artifact_state = ArtifactState.FAILED
    version.artifact_error = reason
    # The machine-readable cause, beside the settings it failed with.
    version.derivation_settings = {**version.derivation_settings, "failure_code": code}
    version.save(
        update_fields=[
            "artifact_state", "artifact_error", "derivation_settings", "updated_at"
        ]
    )  # fmt: skip
    audit.record(
        actor=None,
        action="model_version.derivation_failed",
        obj=version,
        agency=version.model.agency,
        payload={"code": code, "reason": reason},
    )
    return ArtifactState.FAILED


def _derive(version: ModelVersion, work: Path) -> Path:
    """Copy the inputs out of the store and derive the bundle; the zip's path."""
    parent = version.base_version
    recorded = version.derivation_settings
    source = copy_verified(
        key=parent.artifact_key, sha256=parent.artifact_digest, dest=work / "parent"
    )
    out = work / "derived.zip"
    if recorded["method"] == optimise.METHOD:
        report = optimise.derive_optimised_bundle(
            source,
            out,
            memory_bytes=settings.CIVITAS_EVAL_MEMORY_BYTES,
            timeout_s=settings.CIVITAS_DERIVE_TIMEOUT_SECONDS,
            tolerance=recorded["tolerance"],
        )
        for fact in ("model_type", "fused_ops", "packing", "max_relative_diff"):
            recorded[fact] = report[fact]
        recorded["verified_sequences"] = report["verified_sequences"]
        return out
    calibration_path = None
    if recorded.get("calibration_dataset_version"):
        dataset = DatasetVersion.objects.get(pk=recorded["calibration_dataset_version"])
        calibration_path = copy_verified(
            key=dataset.storage_key,
            sha256=recorded["calibration_sha256"],
            dest=work / "calibration.jsonl",
        )
    report = derive_bundle(
        source,
        out,
        QuantiseDerivation(recorded["method"], recorded.get("block_size")),
        calibration_path=calibration_path,
        memory_bytes=settings.CIVITAS_EVAL_MEMORY_BYTES,
        timeout_s=settings.CIVITAS_DERIVE_TIMEOUT_SECONDS,
    )
    if report.get("calibration_batches") is not None:
        recorded["calibration_batches"] = report["calibration_batches"]
    return out


def parent_suites(parent: ModelVersion):
    """The suites the parent has at least one succeeded run on."""
    return EvaluationSuite.objects.filter(
        runs__model_version=parent, runs__status=RunStatus.SUCCEEDED
    ).distinct()


def _release(version: ModelVersion, out: Path) -> str:
    """Inspect and self-test the zip as an upload, store it, queue evaluations."""
    inspected = bundle_inspect(path=out)
    with transaction.atomic(), open(out, "rb") as content:
        released = model_version_artifact_derived(
            version_id=version.pk,
            content=File(content, name="derived.zip"),
            digest=sha256_file(out),
            size=out.stat().st_size,
            inspected=inspected,
            original_filename=f"{version.model.slug}-{version.version}.zip",
        )
        if released is None:
            return "skipped"
        ModelVersion.objects.filter(pk=released.pk).update(
            derivation_settings=version.derivation_settings
        )
        for suite in parent_suites(version.base_version):
            # A suite the requester may no longer use is left out, not fatal.
            with contextlib.suppress(DomainError):
                evaluation_request(
                    actor=version.created_by, model_version=released, suite=suite
                )
    return ArtifactState.AVAILABLE


def model_version_derive_execute(*, version_id: int) -> str:
    """Derive, self-test, store and release a pending derived version.

    Runs on a worker. Safe to run twice: only a version still pending with
    no stored artifact is touched, and the release re-checks it under its row
    lock. A refused parent or calibration file, a graph the optimiser does
    not fuse (``not_fused``) or whose fusion is not verified, a derivation
    that fails or exceeds its limits, or a derived bundle that fails its
    self-test ends the version ``failed`` with ``artifact_error`` and
    ``derivation_settings["failure_code"]``
    (``model_version.derivation_failed``). Returns the resulting state, or
    ``skipped``.
    """
    version = _pending(version_id)
    if version is None:
        return "skipped"
    work = Path(tempfile.mkdtemp(prefix="derive-", dir=artifact_tmp_dir()))
    try:
        out = _derive(version, work)
        return _release(version, out)
    except QuantiseError as exc:
        return _fail(version_id, code=exc.code, reason=exc.message)
    except EvaluationFailure as exc:
        code = exc.reason or exc.code
        return _fail(
            version_id,
            code=code,
            reason=f"The derivation failed ({code}): {exc.message}",
        )
    except DomainError as exc:
        return _fail(
            version_id,
            code=exc.code,
            reason=f"The derived bundle was refused ({exc.code}): {exc.message}",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def model_version_derive_sweep() -> dict[str, int]:
    """Queue the derivation again of versions whose message was lost.

    A derived version still pending with no artifact, last written more than
    ``CIVITAS_DERIVE_TIMEOUT_SECONDS`` plus ``CIVITAS_ARTIFACT_REQUEUE_MINUTES``
    ago, cannot still be deriving: its message or its worker was lost. The
    derivation is queued again on commit (safe to run twice). Returns
    ``{"requeued": n}``.
    """
    before = timezone.now() - timedelta(
        seconds=settings.CIVITAS_DERIVE_TIMEOUT_SECONDS,
        minutes=settings.CIVITAS_ARTIFACT_REQUEUE_MINUTES,
    )
    stale = _awaiting().filter(updated_at__lt=before).values_list("pk", flat=True)
    requeued = 0
    with transaction.atomic():
        for version_id in stale:
            send_on_commit(DERIVE_TASK, version_id=version_id)
            requeued += 1
    return {"requeued": requeued}
