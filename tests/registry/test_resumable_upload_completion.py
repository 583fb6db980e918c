"""Completing a resumable upload: failures keep the data, late writers write nothing.

Completion hashes the staging file in a thread while the bundle is checked,
and stores it through a hard link, so a failure after the store (the
database, the audit log) leaves the session open with its staging file, and
a part writer that waited for its lock during the completion finds the file
gone instead of writing into the stored artifact.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid

import pytest

from config.exceptions import DomainError
from registry.models import ArtifactState, ModelVersion, UploadSession, UploadState
from registry.services import artifacts, uploads
from registry.staging import (
    staged_upload,
    staging_create,
    staging_open,
    upload_staging_path,
)
from registry.storage import remove_spooled
from tests.factories import AIModelFactory, ModelVersionFactory
from tests.registry.artifact_bundles import (  # noqa: F401 - fixtures
    artifact_dirs_fixture,
    files_under,
    fresh_throttles,
)
from tests.registry.test_resumable_upload import (  # noqa: F401 - fixtures
    PART,
    bundle,
    parts_of,
    small_parts,
)


@pytest.fixture
def version_a(agency_a, member_a):
    model = AIModelFactory(agency=agency_a, created_by=member_a)
    return ModelVersionFactory(model=model, created_by=member_a)


def _received(member, version, body: bytes) -> UploadSession:
    """A session with every part of ``body`` received, through the services."""
    session = uploads.upload_session_create(
        actor=member, version=version, size=len(body), part_size=PART
    )
    for number, data in reversed(list(enumerate(parts_of(body), 1))):
        uploads.upload_part_receive(
            session=session, number=number, length=len(data),
            sha256=hashlib.sha256(data).hexdigest(), blocks=[memoryview(data)],
        )  # fmt: skip
    return session


@pytest.mark.django_db
def test_a_completion_failing_after_the_store_keeps_the_upload_resumable(
    member_a, version_a, artifact_dirs, monkeypatch
):
    body = bundle()
    session = _received(member_a, version_a, body)
    staging = upload_staging_path(session.id)

    def broken(**kwargs):
        raise OSError("the audit log is unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(artifacts.audit, "record", broken)
        with pytest.raises(OSError):
            uploads.upload_session_complete(actor=member_a, session=session)

    assert UploadSession.objects.get(pk=session.pk).state == UploadState.OPEN
    assert staging.read_bytes() == body  # the data is still there, whole
    assert files_under(artifact_dirs.store) == []  # the stored link was removed
    assert files_under(artifact_dirs.scratch) == [f"uploads/{staging.name}"]
    assert ModelVersion.objects.get(pk=version_a.pk).artifact_state == "none"

    version = uploads.upload_session_complete(actor=member_a, session=session)

    digest = hashlib.sha256(body).hexdigest()
    assert version.artifact_digest == digest
    assert version.artifact_state == ArtifactState.PENDING
    stored = artifact_dirs.store / version.artifact_key
    assert stored.read_bytes() == body
    assert stored.stat().st_nlink == 1  # no staging name left on the same inode
    assert files_under(artifact_dirs.scratch) == []
    assert UploadSession.objects.get(pk=session.pk).state == UploadState.COMPLETED


@pytest.mark.django_db
def test_a_refused_digest_after_the_check_removes_everything(
    member_a, version_a, artifact_dirs
):
    body = bundle()
    session = _received(member_a, version_a, body)
    UploadSession.objects.filter(pk=session.pk).update(expected_sha256="cd" * 32)
    session.refresh_from_db()

    with pytest.raises(DomainError) as refused:
        uploads.upload_session_complete(actor=member_a, session=session)

    assert refused.value.code == "digest_mismatch"
    assert hashlib.sha256(body).hexdigest() in refused.value.message
    assert UploadSession.objects.get(pk=session.pk).state == UploadState.FAILED
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []


def test_a_part_writer_that_waited_out_the_completion_writes_nothing(
    settings, tmp_path
):
    settings.ARTIFACT_TMP_DIR = tmp_path
    path = upload_staging_path(uuid.uuid4())
    staging_create(path, size=4)
    stored = tmp_path / "stored"
    outcome = {}

    def late_part() -> None:
        try:
            with staging_open(path, exclusive=False) as fd:
                os.pwrite(fd, b"evil", 0)
                outcome["wrote"] = True
        except DomainError as e:
            outcome["code"] = e.code

    with staging_open(path, exclusive=True):
        writer = threading.Thread(target=late_part)
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive()  # waiting for the shared lock
        os.link(path, stored)  # the store keeps the file under another name
        path.unlink()
    writer.join(timeout=10)

    assert outcome == {"code": "upload_gone"}
    assert stored.read_bytes() == bytes(4)


def test_a_staged_upload_hashes_the_file_and_checks_its_length(settings, tmp_path):
    settings.ARTIFACT_TMP_DIR = tmp_path
    path = tmp_path / "staging.bundle"
    data = os.urandom(3 << 20)
    path.write_bytes(data)

    whole = staged_upload(path, name="a/../b.zip", size=len(data))
    short = staged_upload(path, name="b.zip", size=len(data) + 1)
    try:
        assert whole.sha256 == hashlib.sha256(data).hexdigest()
        assert whole.original_name == "a/../b.zip"
        assert os.path.samefile(whole.temporary_file_path(), path)
        with pytest.raises(DomainError) as refused:
            short.sha256  # noqa: B018 - the property waits for the thread
        assert refused.value.code == "upload_incomplete"
    finally:
        remove_spooled(whole)
        remove_spooled(short)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging.bundle"]


@pytest.mark.django_db
def test_the_cleanup_removes_a_staged_link_left_by_a_crash(artifact_dirs):
    artifact_dirs.scratch.mkdir()
    left = artifact_dirs.scratch / f"staged-{uuid.uuid4().hex}.part"
    fresh = artifact_dirs.scratch / f"staged-{uuid.uuid4().hex}.part"
    left.write_bytes(b"a completion that crashed")
    fresh.write_bytes(b"a completion under way")
    old = time.time() - 2 * 86400
    os.utime(left, (old, old))

    assert uploads.upload_session_cleanup() == {"expired": 0, "orphans": 1}

    assert not left.exists()
    assert fresh.exists()
