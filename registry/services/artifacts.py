"""Artifact services: attach, reference and verify model bundles and dataset files.

Every file lives in the one ``artifacts`` storage (``STORAGES["artifacts"]``)
under a key the server makes from the object id and the content digest
(``model-versions/<id>/<sha256>.<onnx|zip|tar|tar.gz>``,
``dataset-versions/<id>/<sha256><suffix>``); the uploader's name is metadata.

A model bundle is stored only after ``engine.bundle`` has unpacked it into a
scratch directory under ``ARTIFACT_TMP_DIR`` and inspected it; the original
upload is what gets stored, the scratch directory is always removed, and a
refusal leaves neither a storage object nor a database change. An accepted
upload is ``pending``: its self-test runs on a worker
(``civitas.artifact_verify``), never in the web request, and releases the
version or fails it (``registry.services.releases``).

Unpacking and inspecting a bundle of several GiB takes a while, so it runs
outside any transaction, before the short one that locks the row, re-checks
its state, stores the file and writes the row; a storage object written in
that transaction is deleted again if the transaction does not commit.

A file registered by reference (model bundle or dataset file) is verified by
one pipeline, ``_reference_verify``: fetch into a spool file, check the
declared digest and size, then the kind's own ``accept`` step stores it.
Storage, spooling and reading references live in ``registry.storage``,
bundle inspection in ``registry.bundles``, downloads in
``registry.services.downloads``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.files import File
from django.db import models, transaction
from django.utils import timezone

from audit import services as audit
from config.celery import send_on_commit
from config.exceptions import Conflict, DomainError
from registry.bundles import (
    InspectedBundle,
    bundle_check,
    bundle_inspect,
    graph_fields,
    upload_format,
)
from registry.models import ArtifactState, DatasetVersion, ModelVersion
from registry.services.releases import (
    modification_assess_on_commit,
    uploaded_artifact_verify,
)
from registry.storage import (
    SpooledUpload,
    artifact_storage,
    dataset_suffix,
    escape_filename,
    open_reference,
    reference_target,
)

VERIFY_TASK = "civitas.artifact_verify"
DATASET_VERIFY_TASK = "civitas.dataset_file_verify"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _refuse_if_has_artifact(version: ModelVersion) -> None:
    """Raise ``Conflict`` unless the version has no artifact (or a refused one).

    A platform-derived version takes only the platform's bundle: an upload
    would claim a derivation that never happened (``derived_version``).
    """
    if version.derivation_settings:
        raise Conflict(
            "This version is derived by the platform; its bundle comes only "
            "from the derivation. Register a new version to upload a bundle.",
            code="derived_version",
        )
    if version.artifact_state == ArtifactState.PENDING:
        raise Conflict(
            "This version's artifact is still being verified.",
            code="artifact_pending",
        )
    if version.artifact_state == ArtifactState.AVAILABLE or version.is_released:
        raise Conflict(
            "This version already has its artifact and is released; register a "
            "new version to publish different content.",
            code="artifact_exists",
        )


def model_version_artifact_check(*, version: ModelVersion) -> None:
    """Refuse early (before the body is read) a version that cannot take an artifact.

    Raises ``Conflict`` (``artifact_exists``, ``artifact_pending``).
    """
    _refuse_if_has_artifact(version)


def _store_and_save(*, key: str, content: File, write: Any) -> Any:
    """Run ``write(save)`` in a transaction; ``save()`` stores ``content`` at ``key``.

    ``write`` locks and re-checks the row, calls ``save()`` (which returns the
    key actually used), updates the row and records the audit event; it may
    raise to refuse. Whatever was stored is deleted again if ``write`` raises
    or the commit fails, so storage never keeps a file the database does not
    point at.
    """
    storage = artifact_storage()
    stored: list[str] = []

    def save() -> str:
        stored.append(storage.save(key, content))
        return stored[-1]

    try:
        with transaction.atomic():
            return write(save)
    except BaseException:
        for name in stored:
            storage.delete(name)
        raise


def model_version_artifact_upload(
    *, actor, version: ModelVersion, upload: SpooledUpload, expected_sha256: str = ""
) -> ModelVersion:
    """Check an uploaded ONNX bundle, store it and queue its self-test.

    The original upload (single ``.onnx``, zip, tar or tar.gz) is unpacked
    and described (``bundle_check``: caps, graph validation, facts; no model
    runs here) and stored under ``model-versions/<id>/<sha256>.<format>``;
    digest, size, format and the graph facts are written to the row and
    ``artifact_state`` becomes ``pending``. ``civitas.artifact_verify`` is
    queued on commit: a worker self-tests the model in the sandbox and
    releases the version or fails it with ``artifact_error``. Records
    ``model_version.artifact_uploaded``.

    Raises ``Conflict`` (``artifact_exists``, ``artifact_pending``) when the
    version already has an artifact, ``DomainError`` with the engine's code
    when the bundle is refused, ``empty_upload``, or ``digest_mismatch``
    when ``expected_sha256`` is given and differs (the digest is read after
    the bundle check, so a ``StagedUpload`` hashes meanwhile). A refusal
    leaves no storage object, no scratch files and no change to the row.
    """
    _refuse_if_has_artifact(version)
    if not upload.size:
        raise DomainError("The upload is empty.", code="empty_upload")
    path = Path(upload.temporary_file_path())
    facts = bundle_check(path=path)
    fmt = upload_format(path)
    if expected_sha256 and upload.sha256 != expected_sha256:
        raise DomainError(
            f"The upload has SHA-256 {upload.sha256}, not the {expected_sha256} "
            "announced.",
            code="digest_mismatch",
        )
    key = f"model-versions/{version.pk}/{upload.sha256}.{fmt}"

    def write(save):
        locked = (
            ModelVersion.objects.select_for_update()
            .select_related("model__agency")
            .get(pk=version.pk)
        )
        _refuse_if_has_artifact(locked)
        stored = save()
        fields = {
            "artifact_state": ArtifactState.PENDING, "artifact_error": "",
            "artifact_key": stored, "artifact_digest": upload.sha256,
            "artifact_size": upload.size, "artifact_format": fmt,
            "original_filename": upload.original_name, "source_uri": "",
            "released_at": None, "selftest": {}, **graph_fields(facts),
        }  # fmt: skip
        for field, value in fields.items():
            setattr(locked, field, value)
        locked.save(update_fields=[*fields, "updated_at"])
        audit.record(
            actor=actor,
            action="model_version.artifact_uploaded",
            obj=locked,
            agency=locked.model.agency,
            payload={
                "sha256": upload.sha256, "size": upload.size, "format": fmt,
                "storage_key": stored, "source_uri": "",
                "original_filename": upload.original_name, "kind": facts.kind,
                "parameter_count": facts.parameter_count,
                "artifact_state": ArtifactState.PENDING,
            },
        )  # fmt: skip
        send_on_commit(VERIFY_TASK, version_id=locked.pk)
        return locked

    return _store_and_save(key=key, content=upload, write=write)


def _model_version_attach(
    *,
    actor,
    version_id: int,
    content: File,
    digest: str,
    size: int,
    fmt: str,
    inspected: InspectedBundle,
    original_filename: str,
    action: str,
    expect_pending: tuple[str, str],
) -> ModelVersion | None:
    """Lock the row, re-check it, store the file and release the version.

    ``expect_pending`` is ``(source_uri, declared digest)``: the row must
    still be pending on that reference, otherwise nothing is stored and None
    is returned (another run finished it).
    """
    key = f"model-versions/{version_id}/{digest}.{fmt}"
    facts = inspected.facts

    def write(save):
        version = (
            ModelVersion.objects.select_for_update()
            .select_related("model__agency")
            .get(pk=version_id)
        )
        if (
            version.artifact_state != ArtifactState.PENDING
            or (version.source_uri, version.artifact_digest) != expect_pending
        ):
            return None
        stored = save()
        now = timezone.now()
        version.artifact_state = ArtifactState.AVAILABLE
        version.artifact_error = ""
        version.artifact_key = stored
        version.artifact_digest = digest
        version.artifact_size = size
        version.artifact_format = fmt
        version.original_filename = original_filename
        version.released_at = now
        version.selftest = inspected.selftest
        for field, value in graph_fields(facts).items():
            setattr(version, field, value)
        version.save(
            update_fields=[
                "artifact_state", "artifact_error", "artifact_key",
                "artifact_digest", "artifact_size", "artifact_format",
                "original_filename", "source_uri", "released_at", "selftest",
                "updated_at", *graph_fields(facts),
            ]
        )  # fmt: skip
        audit.record(
            actor=actor,
            action=action,
            obj=version,
            agency=version.model.agency,
            payload={
                "sha256": digest,
                "size": size,
                "format": fmt,
                "storage_key": stored,
                "source_uri": version.source_uri,
                "original_filename": original_filename,
                "kind": facts.kind,
                "parameter_count": facts.parameter_count,
                "selftest_passed": inspected.selftest.get("passed"),
            },
        )
        modification_assess_on_commit(version)
        return version

    return _store_and_save(key=key, content=content, write=write)


def model_version_artifact_derived(
    *,
    version_id: int,
    content: File,
    digest: str,
    size: int,
    inspected: InspectedBundle,
    original_filename: str,
) -> ModelVersion | None:
    """Store and release a bundle the platform derived for a pending version.

    The bundle was inspected and self-tested like an upload
    (``registry.bundles.bundle_inspect``); the version must still be pending
    with no artifact (``None`` otherwise: another run finished it). Records
    ``model_version.derived`` (actor: the system).
    """
    return _model_version_attach(
        actor=None, version_id=version_id, content=content, digest=digest,
        size=size, fmt="zip", inspected=inspected,
        original_filename=original_filename, action="model_version.derived",
        expect_pending=("", ""),
    )  # fmt: skip


# --- By reference -----------------------------------------------------------


@transaction.atomic
def model_version_artifact_reference(
    *, actor, version: ModelVersion, uri: str, sha256: str
) -> ModelVersion:
    """Register an artifact by reference; a worker fetches and verifies it.

    The version becomes ``pending`` with ``source_uri`` and the declared
    digest in ``artifact_digest``; ``civitas.artifact_verify`` is queued on
    commit. Until the worker has found the declared digest the version is not
    usable. Records ``model_version.artifact_referenced``.

    Raises ``DomainError`` (``reference_scheme_not_allowed``,
    ``reference_not_allowed``, ``invalid_digest``) and ``Conflict``
    (``artifact_exists``, ``artifact_pending``).
    """
    reference_target(uri)
    digest = sha256.strip().lower()
    if not _SHA256.match(digest):
        raise DomainError(
            "sha256 must be the 64 hex characters of the file's SHA-256.",
            code="invalid_digest",
        )
    version = (
        ModelVersion.objects.select_for_update()
        .select_related("model__agency")
        .get(pk=version.pk)
    )
    _refuse_if_has_artifact(version)
    version.artifact_state = ArtifactState.PENDING
    version.artifact_error = ""
    version.artifact_digest = digest
    version.source_uri = uri
    version.original_filename = escape_filename(
        posixpath.basename(unquote(urlsplit(uri).path))
    )
    version.save(
        update_fields=[
            "artifact_state", "artifact_error", "artifact_digest", "source_uri",
            "original_filename", "updated_at",
        ]
    )  # fmt: skip
    audit.record(
        actor=actor,
        action="model_version.artifact_referenced",
        obj=version,
        agency=version.model.agency,
        payload={"source_uri": uri, "sha256": digest},
    )
    send_on_commit(VERIFY_TASK, version_id=version.pk)
    return version


def _fail_reference(
    obj, *, digest_field: str, action: str, agency, expected, reason: str, code: str
) -> str:
    """Mark a locked, still-pending reference ``failed`` with a reason; audit it.

    Shared by model bundles and dataset files: the row's digest field held
    the declared digest, which no longer describes anything and is cleared.
    """
    obj.artifact_state = ArtifactState.FAILED
    obj.artifact_error = reason
    setattr(obj, digest_field, "")
    update = ["artifact_state", "artifact_error", digest_field]
    if hasattr(obj, "updated_at"):
        update.append("updated_at")
    obj.save(update_fields=update)
    audit.record(
        actor=None,
        action=action,
        obj=obj,
        agency=agency,
        payload={
            "source_uri": expected[0],
            "declared_sha256": expected[1],
            "code": code,
            "reason": reason,
        },
    )
    return ArtifactState.FAILED


# --- Verifying a reference (model bundles and dataset files alike) ---------------


class _Refused(Exception):
    """A fetched file the pipeline's ``accept`` step refuses, with the reason."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class _Referenced:
    """How the verify pipeline reads and fails one kind of referenced file."""

    model: type[models.Model]
    digest_field: str  # the field holding the declared, then verified, digest
    owner: str  # the relation leading to the owning agency
    failed_action: str

    def pending(self, pk: int, expected: tuple[str, str]):
        """The row, locked, if still pending on the same reference and digest."""
        return (
            self.model.objects.select_for_update()
            .select_related(f"{self.owner}__agency")
            .filter(
                pk=pk,
                artifact_state=ArtifactState.PENDING,
                source_uri=expected[0],
                **{self.digest_field: expected[1]},
            )
            .first()
        )

    def fail(self, pk: int, expected: tuple[str, str], *, code: str, reason: str):
        """Mark a still-pending reference ``failed`` with a reason; audit it."""
        with transaction.atomic():
            locked = self.pending(pk, expected)
            if locked is None:
                return "skipped"
            return _fail_reference(
                locked,
                digest_field=self.digest_field,
                action=self.failed_action,
                agency=getattr(locked, self.owner).agency,
                expected=expected,
                reason=reason,
                code=code,
            )


_MODEL_BUNDLE = _Referenced(
    model=ModelVersion,
    digest_field="artifact_digest",
    owner="model",
    failed_action="model_version.artifact_verification_failed",
)
_DATASET_FILE = _Referenced(
    model=DatasetVersion,
    digest_field="digest",
    owner="dataset",
    failed_action="dataset_version.file_verification_failed",
)


def _reference_verify(
    kind: _Referenced,
    pk: int,
    accept: Callable[[Any, SpooledUpload, tuple[str, str]], Any],
) -> str:
    """The one verify pipeline: fetch, check digest and size, then ``accept``.

    The file is copied into a spool file with its SHA-256 computed on the way
    (the copy, not the source, is checked and stored, so a source that
    changes meanwhile cannot slip through). ``accept(row, fetched, expected)``
    stores it and returns the updated row, None when another run finished
    first, or raises ``_Refused``. Every refusal ends ``failed`` with a
    readable ``artifact_error`` under the row lock. Returns the resulting
    state, or ``skipped`` when there was nothing to do.
    """
    row = kind.model.objects.filter(pk=pk, artifact_state=ArtifactState.PENDING).first()
    if row is None:
        return "skipped"
    expected = (row.source_uri, getattr(row, kind.digest_field))
    uri, declared = expected
    try:
        fetched = open_reference(uri)
    except DomainError as e:
        return kind.fail(pk, expected, code=e.code, reason=e.message)
    try:
        if fetched.sha256 != declared:
            return kind.fail(
                pk,
                expected,
                code="digest_mismatch",
                reason=(
                    f"The file's SHA-256 is {fetched.sha256}, not the declared "
                    f"{declared}; nothing was stored. Check the file or the "
                    "digest and register the reference again."
                ),
            )
        if not fetched.size:
            return kind.fail(
                pk,
                expected,
                code="empty_upload",
                reason="The referenced file is empty.",
            )
        try:
            accepted = accept(row, fetched, expected)
        except _Refused as refused:
            return kind.fail(pk, expected, code=refused.code, reason=refused.reason)
        return ArtifactState.AVAILABLE if accepted is not None else "skipped"
    finally:
        fetched.close()


def artifact_verify(*, version_id: int) -> str:
    """Fetch a referenced artifact, check its digest, inspect it and release it.

    Runs the verify pipeline shared with dataset files (``_reference_verify``).
    A digest mismatch, an unreadable or refused file, a bundle the engine
    refuses or a language model that fails its self-test ends ``failed``
    with a readable ``artifact_error``; success ends ``available`` with
    ``released_at`` set. Records ``model_version.artifact_verified`` or
    ``model_version.artifact_verification_failed`` (actor: the system).

    A version whose bundle was uploaded (stored, ``pending``, no reference)
    is self-tested from its stored copy instead and released or failed
    (``releases.uploaded_artifact_verify``).

    Safe to run twice: only a row still ``pending`` on the same reference and
    digest is changed, under a row lock taken by a conditional query; the
    loser of a race stores nothing. Returns the resulting state, or
    ``skipped`` when there was nothing to do.
    """
    uploaded = ModelVersion.objects.filter(
        pk=version_id, artifact_state=ArtifactState.PENDING, source_uri=""
    ).exclude(artifact_key="")
    if uploaded.exists():
        return uploaded_artifact_verify(version_id=version_id)

    def accept(version, fetched, expected):
        path = Path(fetched.temporary_file_path())
        try:
            inspected = bundle_inspect(path=path)
        except DomainError as e:
            raise _Refused(
                e.code, f"The bundle was refused ({e.code}): {e.message}"
            ) from None
        return _model_version_attach(
            actor=None,
            version_id=version.pk,
            content=fetched,
            digest=expected[1],
            size=fetched.size,
            fmt=upload_format(path),
            inspected=inspected,
            original_filename=version.original_filename,
            action="model_version.artifact_verified",
            expect_pending=expected,
        )

    return _reference_verify(_MODEL_BUNDLE, version_id, accept)


def dataset_file_verify(*, dataset_version_id: int) -> str:
    """Fetch a referenced dataset file, check its digest and store it.

    Runs the verify pipeline shared with model bundles
    (``_reference_verify``); the file is not inspected. A digest mismatch or
    an unreadable, refused or empty file ends ``failed`` with a readable
    ``artifact_error``; success stores it under
    ``dataset-versions/<id>/<sha256><suffix>`` and ends ``available`` with
    ``digest``, ``size_bytes`` and ``storage_key``. Records
    ``dataset_version.file_verified`` or
    ``dataset_version.file_verification_failed`` (actor: the system).

    Safe to run twice: only a row still ``pending`` on the same reference and
    digest is changed, under a row lock. Returns the resulting state, or
    ``skipped`` when there was nothing to do.
    """
    return _reference_verify(_DATASET_FILE, dataset_version_id, _dataset_file_store)


def _dataset_file_store(dataset_version, fetched, expected):
    """Store a verified dataset file and make the version ``available``."""
    uri, declared = expected
    key = (
        f"dataset-versions/{dataset_version.pk}/{declared}"
        f"{dataset_suffix(dataset_version.original_filename)}"
    )

    def write(save):
        locked = _DATASET_FILE.pending(dataset_version.pk, expected)
        if locked is None:
            return None
        stored = save()
        locked.size_bytes = fetched.size
        locked.storage_key = stored
        locked.artifact_state = ArtifactState.AVAILABLE
        locked.artifact_error = ""
        locked.save(
            update_fields=[
                "size_bytes", "storage_key", "artifact_state", "artifact_error",
            ]
        )  # fmt: skip
        audit.record(
            actor=None,
            action="dataset_version.file_verified",
            obj=locked,
            agency=locked.dataset.agency,
            payload={
                "sha256": declared,
                "size": fetched.size,
                "storage_key": stored,
                "source_uri": uri,
                "original_filename": locked.original_filename,
            },
        )
        return locked

    return _store_and_save(key=key, content=fetched, write=write)


def artifact_sweep() -> dict[str, int]:
    """Queue verification again for references pending too long.

    A model version still ``pending`` more than
    ``CIVITAS_ARTIFACT_REQUEUE_MINUTES`` after it was last written lost its
    ``civitas.artifact_verify`` message (or the worker died before
    finishing): the task is queued again on commit. Dataset versions pending
    that long after their reference was registered get
    ``civitas.dataset_file_verify`` again the same way. Verification is safe
    to run twice, so a slow run that is still going costs only the repeated
    work. Returns ``{"requeued": n}``.
    """
    before = timezone.now() - timedelta(
        minutes=settings.CIVITAS_ARTIFACT_REQUEUE_MINUTES
    )
    requeued = 0
    for version_id in ModelVersion.objects.filter(
        artifact_state=ArtifactState.PENDING, updated_at__lt=before
    ).values_list("pk", flat=True):
        send_on_commit(VERIFY_TASK, version_id=version_id)
        requeued += 1
    for dataset_version_id in _stale_dataset_references(before):
        send_on_commit(DATASET_VERIFY_TASK, dataset_version_id=dataset_version_id)
        requeued += 1
    return {"requeued": requeued}


def _stale_dataset_references(before) -> list[int]:
    """Pending dataset references last registered before ``before``.

    A dataset version has no ``updated_at``: the time of its newest
    ``dataset_version.file_referenced`` event says when it went pending.
    """
    stale = []
    for dataset_version in DatasetVersion.objects.filter(
        artifact_state=ArtifactState.PENDING
    ).only("pk"):
        registered = audit.last_recorded_at(
            action="dataset_version.file_referenced", obj=dataset_version
        )
        if registered is None or registered < before:
            stale.append(dataset_version.pk)
    return stale


# --- Datasets ---------------------------------------------------------------


def dataset_version_file_check(*, dataset_version: DatasetVersion) -> None:
    """Refuse early a dataset version that already has its file.

    Raises ``Conflict`` (``file_exists``).
    """
    if dataset_version.storage_key or dataset_version.artifact_state in (
        ArtifactState.AVAILABLE,
        ArtifactState.PENDING,
    ):
        raise Conflict(
            "This dataset version already has its file; dataset versions are "
            "immutable once their file is attached. Register a new version.",
            code="file_exists",
        )


def dataset_version_file_upload(
    *, actor, dataset_version: DatasetVersion, upload: SpooledUpload
) -> DatasetVersion:
    """Store the data file of a dataset version (any format; not inspected).

    Stored under ``dataset-versions/<id>/<sha256><suffix>`` (suffix from an
    allow-list of data formats, else ``.bin``); ``digest``, ``size_bytes``,
    ``storage_key`` and ``original_filename`` are written and
    ``artifact_state`` becomes ``available``. Records
    ``dataset_version.file_uploaded``.

    Raises ``Conflict`` (``file_exists``) and ``DomainError``
    (``empty_upload``); a refusal stores nothing.
    """
    dataset_version_file_check(dataset_version=dataset_version)
    if not upload.size:
        raise DomainError("The upload is empty.", code="empty_upload")
    key = (
        f"dataset-versions/{dataset_version.pk}/{upload.sha256}"
        f"{dataset_suffix(upload.original_name)}"
    )

    def write(save):
        locked = (
            DatasetVersion.objects.select_for_update()
            .select_related("dataset__agency")
            .get(pk=dataset_version.pk)
        )
        dataset_version_file_check(dataset_version=locked)
        stored = save()
        locked.digest = upload.sha256
        locked.size_bytes = upload.size
        locked.storage_key = stored
        locked.original_filename = upload.original_name
        locked.artifact_state = ArtifactState.AVAILABLE
        locked.artifact_error = ""
        # An upload replaces a refused reference entirely.
        locked.source_uri = ""
        locked.save(
            update_fields=[
                "digest", "size_bytes", "storage_key", "original_filename",
                "artifact_state", "artifact_error", "source_uri",
            ]
        )  # fmt: skip
        audit.record(
            actor=actor,
            action="dataset_version.file_uploaded",
            obj=locked,
            agency=locked.dataset.agency,
            payload={
                "sha256": upload.sha256,
                "size": upload.size,
                "storage_key": stored,
                "original_filename": upload.original_name,
            },
        )
        return locked

    return _store_and_save(key=key, content=upload, write=write)


@transaction.atomic
def dataset_version_file_reference(
    *, actor, dataset_version: DatasetVersion, uri: str, sha256: str
) -> DatasetVersion:
    """Register a dataset version's file by reference; a worker fetches it.

    The same allow-list as model references (``reference_target``). The
    version becomes ``pending`` with ``source_uri`` and the declared digest
    in ``digest``; ``civitas.dataset_file_verify`` is queued on commit.
    Records ``dataset_version.file_referenced``.

    Raises ``DomainError`` (``reference_scheme_not_allowed``,
    ``reference_not_allowed``, ``invalid_digest``) and ``Conflict``
    (``file_exists``, also while a reference is pending).
    """
    reference_target(uri)
    digest = sha256.strip().lower()
    if not _SHA256.match(digest):
        raise DomainError(
            "sha256 must be the 64 hex characters of the file's SHA-256.",
            code="invalid_digest",
        )
    locked = (
        DatasetVersion.objects.select_for_update()
        .select_related("dataset__agency")
        .get(pk=dataset_version.pk)
    )
    dataset_version_file_check(dataset_version=locked)
    locked.artifact_state = ArtifactState.PENDING
    locked.artifact_error = ""
    locked.digest = digest
    locked.source_uri = uri
    locked.original_filename = escape_filename(
        posixpath.basename(unquote(urlsplit(uri).path))
    )
    locked.save(
        update_fields=[
            "artifact_state", "artifact_error", "digest", "source_uri",
            "original_filename",
        ]
    )  # fmt: skip
    audit.record(
        actor=actor,
        action="dataset_version.file_referenced",
        obj=locked,
        agency=locked.dataset.agency,
        payload={"source_uri": uri, "sha256": digest},
    )
    send_on_commit(DATASET_VERIFY_TASK, dataset_version_id=locked.pk)
    return locked
