"""Resumable uploads of a model version's bundle: create, parts, complete, abort.

The shape is S3's multipart upload (create -> PUT numbered parts -> complete,
list the received parts to resume, abort), see docs/artifacts.md. A session
fixes the bundle's size and the part size up front, so part ``n`` has one
place in the staging file and one exact length: parts are written straight
at their offsets (no assembly copy), in any order and in parallel, each
checked against the SHA-256 the client claimed for it. Completion hands the
staging file, under an exclusive lock, to ``model_version_artifact_upload``,
the same path as a single-request upload (the same bundle checks, storage
key, audit event and self-test), hashing it in a thread while the bundle is
checked and storing it by a rename of a hard link (``registry.staging``).

Part writes record no audit event (they change no governed state); creating,
completing (``model_version.artifact_uploaded``) and aborting a session do.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from config.exceptions import Conflict, DomainError, PayloadTooLarge
from registry.models import (
    ModelVersion,
    UploadPart,
    UploadSession,
    UploadState,
)
from registry.services.artifacts import (
    model_version_artifact_check,
    model_version_artifact_upload,
)
from registry.staging import (
    staged_upload,
    staging_create,
    staging_open,
    upload_staging_path,
    write_blocks,
)
from registry.storage import escape_filename, remove_spooled


def _limits_check(*, size: int, part_size: int) -> int:
    """The part count of a valid (size, part_size); raises with field messages."""
    cap = int(settings.CIVITAS_UPLOAD_MAX_BYTES)
    if size > cap:
        raise PayloadTooLarge(
            f"The upload is larger than the limit of {cap} bytes "
            "(CIVITAS_UPLOAD_MAX_BYTES).",
            fields={"size": [f"At most {cap} bytes."]},
        )
    low = int(settings.CIVITAS_UPLOAD_PART_MIN)
    high = int(settings.CIVITAS_UPLOAD_PART_MAX)
    if part_size > high or (part_size < low and part_size < size):
        raise DomainError(
            f"Parts must be between {low} and {high} bytes (only a single part "
            "may be smaller).",
            code="part_size_invalid",
            fields={"part_size": [f"Between {low} and {high} bytes."]},
        )
    count = math.ceil(size / part_size)
    most = int(settings.CIVITAS_UPLOAD_MAX_PARTS)
    if count > most:
        raise DomainError(
            f"{count} parts are more than the {most} allowed; use larger parts.",
            code="too_many_parts",
            fields={"part_size": [f"At least {math.ceil(size / most)} bytes."]},
        )
    return count


@transaction.atomic
def upload_session_create(
    *,
    actor,
    version: ModelVersion,
    size: int,
    part_size: int,
    filename: str = "",
    sha256: str = "",
) -> UploadSession:
    """Open a resumable upload of ``size`` bytes in parts of ``part_size``.

    Creates the sparse staging file under ``ARTIFACT_TMP_DIR/uploads/``
    (named by the session's UUID) and records ``model_version.upload_started``.
    Raises ``Conflict`` (``artifact_exists``, ``artifact_pending``),
    ``PayloadTooLarge`` over ``CIVITAS_UPLOAD_MAX_BYTES``, ``DomainError``
    (``part_size_invalid``, ``too_many_parts``).
    """
    model_version_artifact_check(version=version)
    count = _limits_check(size=size, part_size=part_size)
    session_id = uuid.uuid4()
    hours = int(settings.CIVITAS_UPLOAD_SESSION_HOURS)
    session = UploadSession.objects.create(
        id=session_id, version=version, created_by=actor, size=size,
        part_size=part_size, part_count=count,
        original_filename=escape_filename(filename), expected_sha256=sha256.lower(),
        expires_at=timezone.now() + timedelta(hours=hours),
    )  # fmt: skip
    staging_create(upload_staging_path(session_id), size=size)
    audit.record(
        actor=actor,
        action="model_version.upload_started",
        obj=version,
        agency=version.model.agency,
        payload={
            "upload_id": str(session_id), "size": size, "part_size": part_size,
            "part_count": count, "original_filename": session.original_filename,
        },
    )  # fmt: skip
    return session


def _refuse_unless_open(session: UploadSession) -> None:
    if session.state != UploadState.OPEN:
        raise Conflict(
            f"This upload is {session.state}; it takes no more parts.",
            code="upload_not_open",
        )
    if session.expires_at <= timezone.now():
        raise Conflict(
            "This upload has expired; start a new one.", code="upload_expired"
        )


def upload_part_check(*, session: UploadSession, number: int, length: int) -> None:
    """Refuse a part before its body is read: state, number and exact length.

    Raises ``Conflict`` (``upload_not_open``, ``upload_expired``),
    ``DomainError`` (``part_number_invalid``, ``part_size_mismatch``) and
    ``PayloadTooLarge`` (``payload_too_large``) for a part longer than its slot.
    """
    _refuse_unless_open(session)
    if not 1 <= number <= session.part_count:
        raise DomainError(
            f"Part numbers run from 1 to {session.part_count}.",
            code="part_number_invalid",
        )
    expected = session.part_length(number)
    if length > expected:
        raise PayloadTooLarge(
            f"Part {number} must be exactly {expected} bytes; {length} were announced.",
        )
    if length != expected:
        raise DomainError(
            f"Part {number} must be exactly {expected} bytes; {length} were announced.",
            code="part_size_mismatch",
        )


def upload_part_receive(
    *,
    session: UploadSession,
    number: int,
    length: int,
    sha256: str,
    blocks: Iterable[memoryview],
) -> UploadPart:
    """Write part ``number`` at its offset, hashing it; keep it if the hash matches.

    Call ``upload_part_check`` first. Sending a part again is harmless: the
    same bytes land in the same place. A part whose SHA-256 is not
    ``sha256`` is refused (``part_digest_mismatch``) and counts as missing,
    as does a body that ended early (``incomplete_body``).
    """
    offset = (number - 1) * session.part_size
    with staging_open(upload_staging_path(session.id), exclusive=False) as fd:
        digest, received = write_blocks(fd, blocks, offset=offset)
    problem = None
    if received != length:
        problem = DomainError(
            f"The body ended after {received} of the {length} bytes announced.",
            code="incomplete_body",
        )
    elif digest != sha256.lower():
        problem = DomainError(
            f"Part {number} has SHA-256 {digest}, not the {sha256} claimed; "
            "send it again.",
            code="part_digest_mismatch",
        )
    with transaction.atomic():
        locked = UploadSession.objects.select_for_update().get(pk=session.pk)
        if problem is not None:
            UploadPart.objects.filter(session=locked, number=number).delete()
        else:
            _refuse_unless_open(locked)
            part, _ = UploadPart.objects.update_or_create(
                session=locked, number=number,
                defaults={"size": received, "sha256": digest},
            )  # fmt: skip
    if problem is not None:
        raise problem
    return part


def _claim(session: UploadSession) -> UploadSession:
    """Move the session from open to completing, once; check every part is in."""
    with transaction.atomic():
        locked = UploadSession.objects.select_for_update().get(pk=session.pk)
        _refuse_unless_open(locked)
        have = set(locked.parts.values_list("number", flat=True))
        missing = [n for n in range(1, locked.part_count + 1) if n not in have]
        if missing:
            shown = ", ".join(map(str, missing[:20]))
            raise DomainError(
                f"{len(missing)} part(s) are missing: {shown}.",
                code="upload_incomplete",
                fields={"parts": [f"Missing: {shown}."]},
            )
        locked.state = UploadState.COMPLETING
        locked.save(update_fields=["state"])
    return locked


def _finish(session: UploadSession, *, state: str, error: str = "") -> None:
    UploadSession.objects.filter(pk=session.pk).update(state=state, error=error)


def upload_session_complete(*, actor, session: UploadSession) -> ModelVersion:
    """Check the assembled bundle and store it as the version's artifact.

    Claims the session (a second, concurrent completion gets ``Conflict``
    ``upload_not_open``) and takes the staging file's exclusive lock until
    the file is gone. ``model_version_artifact_upload`` checks the bundle
    while a thread hashes the same file (one read each, from the page cache),
    refuses a digest other than the announced one (``digest_mismatch``) and
    stores the file through a hard link (a rename on the local backend). A
    refused bundle fails the session, removes its data and raises that
    service's error; any other failure (the database, the store) leaves the
    session open with its data, to be completed again.
    """
    session = _claim(session)
    path = upload_staging_path(session.id)
    try:
        with staging_open(path, exclusive=True):
            upload = None
            try:
                upload = staged_upload(
                    path, name=session.original_filename, size=session.size
                )
                version = model_version_artifact_upload(
                    actor=actor, version=session.version, upload=upload,
                    expected_sha256=session.expected_sha256,
                )  # fmt: skip
            except DomainError:
                path.unlink(missing_ok=True)
                raise
            finally:
                remove_spooled(upload)
            _finish(session, state=UploadState.COMPLETED)
            path.unlink(missing_ok=True)
    except DomainError as e:
        _finish(session, state=UploadState.FAILED, error=str(e))
        _remove_staging(session.id)
        raise
    except BaseException:
        _finish(session, state=UploadState.OPEN)
        raise
    return version


def _remove_staging(session_id) -> None:
    upload_staging_path(session_id).unlink(missing_ok=True)


@transaction.atomic
def upload_session_abort(*, actor, session: UploadSession) -> None:
    """Drop an unfinished upload and its data; records ``upload_aborted``.

    Raises ``Conflict`` (``upload_not_open``) while it is being completed.
    """
    locked = (
        UploadSession.objects.select_for_update()
        .select_related("version__model__agency")
        .get(pk=session.pk)
    )
    if locked.state == UploadState.COMPLETING:
        raise Conflict("This upload is being completed.", code="upload_not_open")
    audit.record(
        actor=actor,
        action="model_version.upload_aborted",
        obj=locked.version,
        agency=locked.version.model.agency,
        payload={"upload_id": str(locked.id), "state": locked.state},
    )
    session_id = locked.id
    locked.delete()
    transaction.on_commit(lambda: _remove_staging(session_id))


def upload_session_cleanup() -> dict[str, int]:
    """Remove expired sessions and their staging files, and orphaned files.

    Run hourly by ``civitas.upload_cleanup``. A staging file with no session
    row (a crash between creating it and committing), or a completion's
    ``staged-*.part`` link left by a crash, goes once it is older than
    ``CIVITAS_UPLOAD_SESSION_HOURS``.
    """
    now = timezone.now()
    expired = list(
        UploadSession.objects.filter(expires_at__lte=now).values_list("id", flat=True)
    )
    UploadSession.objects.filter(id__in=expired).delete()
    for session_id in expired:
        _remove_staging(session_id)
    directory = upload_staging_path(uuid.UUID(int=0)).parent
    live = {s.hex for s in UploadSession.objects.values_list("id", flat=True)}
    horizon = now.timestamp() - 3600 * int(settings.CIVITAS_UPLOAD_SESSION_HOURS)
    staged = [e for e in os.scandir(directory.parent) if e.name.startswith("staged-")]
    orphans = 0
    for entry in [*os.scandir(directory), *staged]:
        stem = entry.name.removesuffix(".bundle")
        if stem not in live and entry.stat(follow_symlinks=False).st_mtime < horizon:
            os.unlink(entry.path)
            orphans += 1
    return {"expired": len(expired), "orphans": orphans}
