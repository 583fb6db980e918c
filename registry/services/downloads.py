"""Handing out stored model bundles and dataset files, each download audited."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.files import File
from django.db import transaction

from audit import services as audit
from config.exceptions import Conflict
from registry.models import ArtifactState, DatasetVersion, ModelVersion
from registry.storage import CONTENT_TYPES, artifact_storage, dataset_suffix


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
        content_type=CONTENT_TYPES.get(fmt, "application/octet-stream"),
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
    suffix = dataset_suffix(dataset_version.storage_key)
    return ArtifactDownload(
        file=file,
        filename=f"{dataset_version.dataset.slug}-{dataset_version.version}{suffix}",
        sha256=dataset_version.digest,
        size=dataset_version.size_bytes or 0,
        content_type="application/octet-stream",
    )
