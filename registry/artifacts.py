"""Artifact services: attach, reference, verify and hand out model and dataset files.

Every file lives in the one ``artifacts`` storage (``STORAGES["artifacts"]``)
under a key the server makes from the object id and the content digest
(``model-versions/<id>/<sha256>.<onnx|zip|tar|tar.gz>``,
``dataset-versions/<id>/<sha256><suffix>``); the uploader's name is metadata.

A model bundle is accepted only after ``engine.bundle`` has unpacked
it into a scratch directory under ``ARTIFACT_TMP_DIR`` and inspected it; the
original upload is what gets stored, the scratch directory is always removed,
and a refusal leaves neither a storage object nor a database change.

Unpacking and inspecting a bundle of several GiB takes a while, so it runs
outside any transaction, before the short one that locks the row, re-checks
its state, stores the file and writes the row; a storage object written in
that transaction is deleted again if the transaction does not commit.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import transaction
from django.utils import timezone

from config.celery import send_on_commit
from config.exceptions import Conflict, DomainError
from engine.archive import BundleError, Limits, materialise_bundle
from engine.bundle import GraphFacts, inspect_bundle
from engine.selftest import SELFTEST_KINDS, SelftestFailure, run_selftest
from governance import audit
from registry.models import ArtifactState, DatasetVersion, ModelVersion
from registry.uploads import SpooledUpload, artifact_tmp_dir, escape_filename, spool

VERIFY_TASK = "civitas.artifact_verify"
DATASET_VERIFY_TASK = "civitas.dataset_file_verify"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_TYPES = {
    "onnx": "application/octet-stream",
    "zip": "application/zip",
    "tar": "application/x-tar",
    "tar.gz": "application/gzip",
}
# Dataset files keep a recognisable suffix in their key and download name
# only when it is one of these; anything else is stored as ``.bin``.
_DATASET_SUFFIXES = (
    ".jsonl.gz", ".csv.gz", ".tsv.gz", ".json.gz", ".tar.gz",
    ".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow", ".txt",
    ".zip", ".tar", ".gz", ".zst",
)  # fmt: skip


def artifact_storage() -> Storage:
    """The storage every model bundle and dataset file goes through."""
    return storages["artifacts"]


def bundle_limits() -> Limits:
    """The archive caps of the settings, as the engine's ``Limits``."""
    return Limits(
        max_files=settings.CIVITAS_BUNDLE_MAX_FILES,
        max_total_bytes=settings.CIVITAS_BUNDLE_MAX_UNPACKED_BYTES,
        max_ratio=settings.CIVITAS_BUNDLE_MAX_RATIO,
    )


@contextmanager
def _scratch_dir() -> Iterator[Path]:
    """A private directory under ``ARTIFACT_TMP_DIR``, removed whatever happens."""
    path = Path(tempfile.mkdtemp(prefix="bundle-", dir=artifact_tmp_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class InspectedBundle:
    """What the registry learnt from a bundle before accepting it."""

    facts: GraphFacts
    selftest: dict[str, Any]


def bundle_inspect(*, path: Path) -> InspectedBundle:
    """Unpack an uploaded bundle into a scratch directory, describe and test it.

    Language models (``causal_lm_kv``, ``causal_lm``) are then self-tested
    (``engine.selftest``) in the sandboxed child, limited by
    ``CIVITAS_EVAL_MEMORY_BYTES`` and ``CIVITAS_SELFTEST_TIMEOUT_SECONDS``;
    other kinds get empty ``selftest`` figures. The scratch directory is
    removed before returning. Raises ``DomainError`` with the engine's code
    (``unsafe_path``, ``link_member``, ``compression_ratio``,
    ``too_many_files``, ``invalid_onnx``, ``missing_tokenizer``...) when the
    bundle is refused, or ``selftest_failed`` when the self-test fails.
    """
    limits = bundle_limits()
    with _scratch_dir() as scratch:
        try:
            root = materialise_bundle(path, scratch / "bundle", limits=limits)
            facts = inspect_bundle(root, limits=limits)
        except BundleError as e:
            raise DomainError(e.message, code=e.code) from e
        if facts.kind not in SELFTEST_KINDS:
            return InspectedBundle(facts=facts, selftest={})
        try:
            figures = run_selftest(
                root,
                facts=facts,
                memory_bytes=settings.CIVITAS_EVAL_MEMORY_BYTES,
                timeout_s=settings.CIVITAS_SELFTEST_TIMEOUT_SECONDS,
            )
        except SelftestFailure as e:
            raise DomainError(e.message, code="selftest_failed") from e
        return InspectedBundle(facts=facts, selftest=figures)


def upload_format(path: Path) -> str:
    """Name the stored format of an accepted upload from its magic bytes."""
    with open(path, "rb") as f:
        head = f.read(262)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head[257:262] == b"ustar":
        return "tar"
    return "onnx"


def _dataset_suffix(name: str) -> str:
    lowered = name.lower()
    return next((s for s in _DATASET_SUFFIXES if lowered.endswith(s)), ".bin")


def _refuse_if_has_artifact(version: ModelVersion) -> None:
    """Raise ``Conflict`` unless the version has no artifact (or a refused one)."""
    if version.artifact_state == ArtifactState.PENDING:
        raise Conflict(
            "This version's referenced artifact is still being verified.",
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


def _graph_fields(facts: GraphFacts) -> dict[str, Any]:
    data = facts.to_dict()
    return {
        "graph_inputs": data["inputs"],
        "graph_outputs": data["outputs"],
        "opsets": data["opsets"],
        "parameter_count": facts.parameter_count,
        "weight_bytes": facts.weight_bytes,
        "kind": facts.kind,
        "layout": facts.layout,
        "num_layers": facts.num_layers,
        "quantisation": facts.quantisation,
    }


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
    *, actor, version: ModelVersion, upload: SpooledUpload
) -> ModelVersion:
    """Inspect an uploaded ONNX bundle, store it and release the version.

    The original upload (single ``.onnx``, zip, tar or tar.gz) is stored under
    ``model-versions/<id>/<sha256>.<format>``; digest, size, format and the
    graph facts read by the engine (and, for a language model, its
    self-test figures) are written to the row, ``artifact_state`` becomes
    ``available`` and ``released_at`` is set: the content is frozen. Records
    ``model_version.artifact_uploaded``.

    Raises ``Conflict`` (``artifact_exists``, ``artifact_pending``) when the
    version already has an artifact, ``DomainError`` with the engine's code
    when the bundle is refused, ``selftest_failed`` when a language model
    fails its self-test, or ``empty_upload``. A refusal leaves no
    storage object, no scratch files and no change to the row.
    """
    _refuse_if_has_artifact(version)
    if not upload.size:
        raise DomainError("The upload is empty.", code="empty_upload")
    path = Path(upload.temporary_file_path())
    inspected = bundle_inspect(path=path)
    fmt = upload_format(path)
    return _model_version_attach(
        actor=actor,
        version_id=version.pk,
        content=upload,
        digest=upload.sha256,
        size=upload.size,
        fmt=fmt,
        inspected=inspected,
        original_filename=upload.original_name,
        action="model_version.artifact_uploaded",
        expect_pending=None,
    )


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
    expect_pending: tuple[str, str] | None,
) -> ModelVersion | None:
    """Lock the row, re-check it, store the file and release the version.

    ``expect_pending`` is ``(source_uri, declared digest)`` for a verification:
    the row must still be pending on that reference, otherwise nothing is
    stored and None is returned (another run finished it).
    """
    key = f"model-versions/{version_id}/{digest}.{fmt}"
    facts = inspected.facts

    def write(save):
        version = (
            ModelVersion.objects.select_for_update()
            .select_related("model__agency")
            .get(pk=version_id)
        )
        if expect_pending is None:
            _refuse_if_has_artifact(version)
            # An upload replaces a refused reference entirely.
            version.source_uri = ""
        elif (
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
        for field, value in _graph_fields(facts).items():
            setattr(version, field, value)
        version.save(
            update_fields=[
                "artifact_state", "artifact_error", "artifact_key",
                "artifact_digest", "artifact_size", "artifact_format",
                "original_filename", "source_uri", "released_at", "selftest",
                "updated_at", *_graph_fields(facts),
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
        return version

    return _store_and_save(key=key, content=content, write=write)


# --- By reference -----------------------------------------------------------


@dataclass(frozen=True)
class ReferenceTarget:
    """Where a referenced artifact is read from, after the allow-list check."""

    scheme: str  # "file" or "s3"
    path: str = ""  # file: the resolved absolute path
    bucket: str = ""  # s3
    key: str = ""  # s3


def _not_allowed(why: str) -> DomainError:
    return DomainError(
        f"The reference {why}; only files inside the directories listed in "
        "CIVITAS_REFERENCE_ROOTS can be registered by reference. Upload the file "
        "instead.",
        code="reference_not_allowed",
    )


def _scheme_not_allowed(scheme: str) -> DomainError:
    return DomainError(
        f"References with the scheme {scheme or '(none)'!r} are not accepted: use "
        "a file:// path inside CIVITAS_REFERENCE_ROOTS, or s3:// when an S3 "
        "endpoint is configured. HTTP(S) URLs are never fetched; upload the file "
        "instead.",
        code="reference_scheme_not_allowed",
    )


def _inside(path: str, root: str) -> bool:
    return path != root and os.path.commonpath([path, root]) == root


def _file_roots() -> list[str]:
    return [
        os.path.realpath(root)
        for root in settings.CIVITAS_REFERENCE_ROOTS
        if root.startswith("/")
    ]


def _file_target(parts) -> ReferenceTarget:
    if parts.netloc not in ("", "localhost"):
        raise _not_allowed("names a remote host")
    if parts.query or parts.fragment:
        raise _not_allowed("has a query or fragment")
    path = unquote(parts.path)
    if "\x00" in path or "\\" in path:
        raise _not_allowed("contains a NUL byte or a backslash")
    if not path.startswith("/"):
        raise _not_allowed("is not an absolute path")
    if ".." in path.split("/"):
        raise _not_allowed("contains a '..' component")
    real = os.path.realpath(path)
    if not any(_inside(real, root) for root in _file_roots()):
        raise _not_allowed("resolves outside the allowed directories")
    return ReferenceTarget(scheme="file", path=real)


def s3_enabled() -> bool:
    """True when an S3 endpoint is configured and boto3 is installed."""
    return bool(settings.CIVITAS_S3_ENDPOINT_URL) and (
        importlib.util.find_spec("boto3") is not None
    )


def _s3_target(parts) -> ReferenceTarget:
    if not s3_enabled():
        raise _scheme_not_allowed("s3")
    bucket, key = parts.netloc, unquote(parts.path).lstrip("/")
    if not bucket or not key or parts.query or parts.fragment:
        raise _not_allowed("does not name an object as s3://bucket/key")
    if "\x00" in key or ".." in key.split("/"):
        raise _not_allowed("contains a NUL byte or a '..' component")
    full = f"{bucket}/{key}"
    prefixes = [
        root.removeprefix("s3://").rstrip("/") + "/"
        for root in settings.CIVITAS_REFERENCE_ROOTS
        if root.startswith("s3://")
    ]
    if not any(full.startswith(prefix) for prefix in prefixes):
        raise _not_allowed("is outside the allowed S3 prefixes")
    return ReferenceTarget(scheme="s3", bucket=bucket, key=key)


def reference_target(uri: str) -> ReferenceTarget:
    """Check a reference URI against the allow-list and say where to read it.

    ``file://`` paths must resolve (symlinks followed) strictly inside one of
    the absolute directories of ``CIVITAS_REFERENCE_ROOTS`` and contain no
    ``..``; ``s3://bucket/key`` needs ``CIVITAS_S3_ENDPOINT_URL``, boto3 and
    an ``s3://bucket/prefix`` entry of the allow-list. Nothing else is ever
    fetched (no HTTP: the platform must not be a proxy to internal hosts).
    Raises ``DomainError`` (``reference_scheme_not_allowed``,
    ``reference_not_allowed``).
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _file_target(parts)
    if scheme == "s3":
        return _s3_target(parts)
    raise _scheme_not_allowed(scheme)


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


def _open_file_reference(uri: str) -> SpooledUpload:
    """Copy a ``file://`` reference into a spool file, re-checking the allow-list.

    The path is resolved again here (the tree may have changed since the
    request) and opened without following a final symlink; on Linux the opened
    descriptor's real path is checked once more, so a swap between the check
    and the open cannot read outside the roots.
    """
    target = reference_target(uri)
    try:
        fd = os.open(
            target.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        )
    except FileNotFoundError:
        raise DomainError(f"No file at {uri}.", code="reference_not_found") from None
    except OSError as e:
        raise DomainError(
            f"The file at {uri} cannot be opened ({e.strerror}).",
            code="reference_unreadable",
        ) from None
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DomainError(
                f"{uri} is not a regular file.", code="reference_not_file"
            )
        proc = f"/proc/self/fd/{fd}"
        if os.path.exists(proc) and not any(
            _inside(os.path.realpath(proc), root) for root in _file_roots()
        ):
            raise _not_allowed("resolves outside the allowed directories")
        return spool(
            source,
            name=os.path.basename(target.path),
            max_bytes=int(settings.CIVITAS_UPLOAD_MAX_BYTES),
        )


def _open_s3_reference(uri: str) -> SpooledUpload:
    """Copy an ``s3://`` reference into a spool file through boto3, streaming."""
    import boto3  # optional: only present where S3 references are enabled

    target = reference_target(uri)
    client = boto3.client("s3", endpoint_url=settings.CIVITAS_S3_ENDPOINT_URL)
    try:
        body = client.get_object(Bucket=target.bucket, Key=target.key)["Body"]
    except Exception as e:  # botocore's errors are dynamic classes
        raise DomainError(
            f"The object {uri} cannot be read ({e}).", code="reference_unreadable"
        ) from None
    try:
        return spool(
            body,
            name=posixpath.basename(target.key),
            max_bytes=int(settings.CIVITAS_UPLOAD_MAX_BYTES),
        )
    finally:
        body.close()


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


def _verification_failed(
    *, version_id: int, expected: tuple[str, str], reason: str, code: str
) -> str:
    """Mark a still-pending verification ``failed`` with a reason; audit it."""
    with transaction.atomic():
        version = (
            ModelVersion.objects.select_for_update()
            .select_related("model__agency")
            .filter(
                pk=version_id,
                artifact_state=ArtifactState.PENDING,
                source_uri=expected[0],
                artifact_digest=expected[1],
            )
            .first()
        )
        if version is None:
            return "skipped"
        return _fail_reference(
            version,
            digest_field="artifact_digest",
            action="model_version.artifact_verification_failed",
            agency=version.model.agency,
            expected=expected,
            reason=reason,
            code=code,
        )


def artifact_verify(*, version_id: int) -> str:
    """Fetch a referenced artifact, check its digest, inspect it and release it.

    The file is copied into a spool file with its SHA-256 computed on the way
    (the copy, not the source, is inspected and stored, so a source that
    changes meanwhile cannot slip through). A digest mismatch, an unreadable
    or refused file, a bundle the engine refuses or a language model that
    fails its self-test ends ``failed`` with a
    readable ``artifact_error``; success ends ``available`` with
    ``released_at`` set. Records ``model_version.artifact_verified`` or
    ``model_version.artifact_verification_failed`` (actor: the system).

    Safe to run twice: only a row still ``pending`` on the same reference and
    digest is changed, under a row lock taken by a conditional query; the
    loser of a race stores nothing. Returns the resulting state, or
    ``skipped`` when there was nothing to do.
    """
    version = ModelVersion.objects.filter(
        pk=version_id, artifact_state=ArtifactState.PENDING
    ).first()
    if version is None:
        return "skipped"
    expected = (version.source_uri, version.artifact_digest)
    uri, declared = expected
    scheme = urlsplit(uri).scheme.lower()
    try:
        fetched = (
            _open_s3_reference(uri) if scheme == "s3" else _open_file_reference(uri)
        )
    except DomainError as e:
        return _verification_failed(
            version_id=version_id, expected=expected, reason=e.message, code=e.code
        )
    try:
        if fetched.sha256 != declared:
            return _verification_failed(
                version_id=version_id,
                expected=expected,
                code="digest_mismatch",
                reason=(
                    f"The file's SHA-256 is {fetched.sha256}, not the declared "
                    f"{declared}; nothing was stored. Check the file or the "
                    "digest and register the reference again."
                ),
            )
        if not fetched.size:
            return _verification_failed(
                version_id=version_id,
                expected=expected,
                code="empty_upload",
                reason="The referenced file is empty.",
            )
        path = Path(fetched.temporary_file_path())
        try:
            inspected = bundle_inspect(path=path)
        except DomainError as e:
            return _verification_failed(
                version_id=version_id,
                expected=expected,
                code=e.code,
                reason=f"The bundle was refused ({e.code}): {e.message}",
            )
        released = _model_version_attach(
            actor=None,
            version_id=version_id,
            content=fetched,
            digest=declared,
            size=fetched.size,
            fmt=upload_format(path),
            inspected=inspected,
            original_filename=version.original_filename,
            action="model_version.artifact_verified",
            expect_pending=expected,
        )
        return ArtifactState.AVAILABLE if released is not None else "skipped"
    finally:
        fetched.close()


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
        f"{_dataset_suffix(upload.original_name)}"
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


def _pending_dataset_version(dataset_version_id: int, expected: tuple[str, str]):
    return (
        DatasetVersion.objects.select_for_update()
        .select_related("dataset__agency")
        .filter(
            pk=dataset_version_id,
            artifact_state=ArtifactState.PENDING,
            source_uri=expected[0],
            digest=expected[1],
        )
        .first()
    )


def _dataset_verification_failed(
    *, dataset_version_id: int, expected: tuple[str, str], reason: str, code: str
) -> str:
    """Mark a still-pending dataset reference ``failed`` with a reason; audit it."""
    with transaction.atomic():
        locked = _pending_dataset_version(dataset_version_id, expected)
        if locked is None:
            return "skipped"
        return _fail_reference(
            locked,
            digest_field="digest",
            action="dataset_version.file_verification_failed",
            agency=locked.dataset.agency,
            expected=expected,
            reason=reason,
            code=code,
        )


def dataset_file_verify(*, dataset_version_id: int) -> str:
    """Fetch a referenced dataset file, check its digest and store it.

    The file is copied into a spool file with its SHA-256 computed on the way
    (the copy is what gets stored); it is not inspected. A digest mismatch or
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
    dataset_version = DatasetVersion.objects.filter(
        pk=dataset_version_id, artifact_state=ArtifactState.PENDING
    ).first()
    if dataset_version is None:
        return "skipped"
    expected = (dataset_version.source_uri, dataset_version.digest)
    uri, declared = expected

    def failed(code: str, reason: str) -> str:
        return _dataset_verification_failed(
            dataset_version_id=dataset_version_id,
            expected=expected,
            code=code,
            reason=reason,
        )

    scheme = urlsplit(uri).scheme.lower()
    try:
        fetched = (
            _open_s3_reference(uri) if scheme == "s3" else _open_file_reference(uri)
        )
    except DomainError as e:
        return failed(e.code, e.message)
    try:
        if fetched.sha256 != declared:
            return failed(
                "digest_mismatch",
                f"The file's SHA-256 is {fetched.sha256}, not the declared "
                f"{declared}; nothing was stored. Check the file or the digest "
                "and register the reference again.",
            )
        if not fetched.size:
            return failed("empty_upload", "The referenced file is empty.")
        key = (
            f"dataset-versions/{dataset_version_id}/{declared}"
            f"{_dataset_suffix(dataset_version.original_filename)}"
        )

        def write(save):
            locked = _pending_dataset_version(dataset_version_id, expected)
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

        stored = _store_and_save(key=key, content=fetched, write=write)
        return ArtifactState.AVAILABLE if stored is not None else "skipped"
    finally:
        fetched.close()


# --- Downloads --------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactDownload:
    """An open stored file and what a response needs to describe it."""

    file: File
    filename: str
    sha256: str
    size: int
    content_type: str


def _not_available() -> Conflict:
    return Conflict(
        "The artifact is not available: it was never uploaded, is still being "
        "verified, or was refused.",
        code="artifact_not_available",
    )


@transaction.atomic
def model_version_download(*, actor, version: ModelVersion) -> ArtifactDownload:
    """Open a version's verified artifact for streaming and record the download.

    The caller must already have checked that ``actor`` may see the version.
    The download name is made from the model slug and version, never from
    the uploaded name. Records ``model_version.downloaded``. Raises
    ``Conflict`` (``artifact_not_available``) unless the artifact is
    ``available``.
    """
    if version.artifact_state != ArtifactState.AVAILABLE or not version.artifact_key:
        raise _not_available()
    audit.record(
        actor=actor,
        action="model_version.downloaded",
        obj=version,
        agency=version.model.agency,
        payload={"sha256": version.artifact_digest, "size": version.artifact_size},
    )
    # Opened last: a missing object rolls the audit event back with it.
    file = artifact_storage().open(version.artifact_key, "rb")
    fmt = version.artifact_format or "onnx"
    return ArtifactDownload(
        file=file,
        filename=f"{version.model.slug}-{version.version}.{fmt}",
        sha256=version.artifact_digest,
        size=version.artifact_size or 0,
        content_type=_CONTENT_TYPES.get(fmt, "application/octet-stream"),
    )


@transaction.atomic
def dataset_version_download(
    *, actor, dataset_version: DatasetVersion
) -> ArtifactDownload:
    """Open a dataset version's file for streaming and record the download.

    The caller must already have checked visibility. Records
    ``dataset_version.downloaded``. Raises ``Conflict``
    (``artifact_not_available``) when the version has no file.
    """
    if (
        dataset_version.artifact_state != ArtifactState.AVAILABLE
        or not dataset_version.storage_key
    ):
        raise _not_available()
    audit.record(
        actor=actor,
        action="dataset_version.downloaded",
        obj=dataset_version,
        agency=dataset_version.dataset.agency,
        payload={"sha256": dataset_version.digest, "size": dataset_version.size_bytes},
    )
    file = artifact_storage().open(dataset_version.storage_key, "rb")
    suffix = _dataset_suffix(dataset_version.storage_key)
    return ArtifactDownload(
        file=file,
        filename=f"{dataset_version.dataset.slug}-{dataset_version.version}{suffix}",
        sha256=dataset_version.digest,
        size=dataset_version.size_bytes or 0,
        content_type="application/octet-stream",
    )
