"""Governed writes of the registry: every create or change goes through here.

One module per sub-domain: ``agencies`` (agencies, people, API tokens),
``catalogue`` (licences, datasets, models and their versions, a version's
status), ``artifacts`` (attaching, referencing and verifying model bundles
and dataset files), ``downloads``, ``identity`` (single sign-on claim rules
and sign-ins, sign-out everywhere; imported as ``registry.services.identity``);
``changes`` holds what they share.

Each service is keyword-only, takes the acting user, checks who may act and
the business rules, raises ``config.exceptions`` errors (never Django's
``ValidationError``, which the API would not render), writes, and records one
audit event. Update services take ``UNSET`` for fields the caller leaves
alone, so ``None`` and ``""`` remain real values.

Who may write:

- platform administrators create agencies and act on every agency;
- an agency's maintainers update the agency, its datasets and models, and
  manage its people up to the maintainer role;
- an agency's members and maintainers register datasets, dataset versions,
  models and model versions and edit unreleased versions;
- oversight reviewers read across agencies and write nothing here.

The names below are re-exported so ``from registry import services`` keeps
working; no submodule imports this package.
"""

from registry.services.agencies import (
    AGENCY_ROLES,
    agency_create,
    agency_update,
    membership_add,
    membership_remove,
    membership_set_role,
    token_create,
    token_revoke,
)
from registry.services.artifacts import (
    DATASET_VERIFY_TASK,
    VERIFY_TASK,
    artifact_sweep,
    artifact_verify,
    dataset_file_verify,
    dataset_version_file_check,
    dataset_version_file_reference,
    dataset_version_file_upload,
    model_version_artifact_check,
    model_version_artifact_reference,
    model_version_artifact_upload,
)
from registry.services.catalogue import (
    LANGUAGE_TAG,
    NEEDS_LEGAL_BASIS,
    dataset_create,
    dataset_update,
    dataset_version_create,
    licence_lookup,
    licence_register,
    model_create,
    model_publish,
    model_update,
    model_version_create,
    model_version_status_sync,
    model_version_update,
)
from registry.services.changes import (
    LONG_TEXT_CHARS,
    UNSET,
    WRITER_ROLES,
)
from registry.services.downloads import (
    ArtifactDownload,
    dataset_version_download,
    model_version_download,
)

__all__ = [
    "AGENCY_ROLES",
    "DATASET_VERIFY_TASK",
    "LANGUAGE_TAG",
    "LONG_TEXT_CHARS",
    "NEEDS_LEGAL_BASIS",
    "UNSET",
    "VERIFY_TASK",
    "WRITER_ROLES",
    "ArtifactDownload",
    "agency_create",
    "agency_update",
    "artifact_sweep",
    "artifact_verify",
    "dataset_create",
    "dataset_file_verify",
    "dataset_update",
    "dataset_version_create",
    "dataset_version_download",
    "dataset_version_file_check",
    "dataset_version_file_reference",
    "dataset_version_file_upload",
    "licence_lookup",
    "licence_register",
    "membership_add",
    "membership_remove",
    "membership_set_role",
    "model_create",
    "model_publish",
    "model_update",
    "model_version_artifact_check",
    "model_version_artifact_reference",
    "model_version_artifact_upload",
    "model_version_create",
    "model_version_download",
    "model_version_status_sync",
    "model_version_update",
    "token_create",
    "token_revoke",
]
