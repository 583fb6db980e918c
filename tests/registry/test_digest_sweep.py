"""Stored artifacts are hashed again on a schedule; a flipped byte suspends."""

from __future__ import annotations

import hashlib

import pytest
from django.conf import settings
from django.core import mail
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from audit.models import AuditEvent
from governance.models import UseCaseStatus, UseCaseTransition
from governance.services import digests as governance_digests
from registry.models import ArtifactState, ModelVersion, VersionStatus
from registry.services import digests as registry_digests
from tests.factories import DatasetVersionFactory, ModelVersionFactory
from tests.governance.conftest import (  # noqa: F401  (the lifecycle kit)
    aia_questionnaire,
    baseline_policy,
    draft_use_case,
    governed_version,
    kit,
    second_reviewer,
    small_suite,
)

pytestmark = pytest.mark.django_db

BUNDLE = b"PK\x03\x04" + bytes(range(256)) * 64


def _store(key: str, content: bytes) -> tuple[str, str]:
    key = storages["artifacts"].save(key, ContentFile(content))
    return key, hashlib.sha256(content).hexdigest()


def _flip_a_byte(key: str, offset: int = 1000) -> None:
    path = storages["artifacts"].path(key)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


@pytest.fixture
def stored_kit(kit):  # noqa: F811  (the imported fixture)
    """The lifecycle kit, its version's artifact a real stored file."""
    key, digest = _store("tests/digest-sweep.zip", BUNDLE)
    ModelVersion.objects.filter(pk=kit.use_case.model_version_id).update(
        artifact_key=key, artifact_digest=digest
    )
    kit.use_case.model_version.refresh_from_db()
    return kit


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def test_sweep_is_a_daily_beat_entry():
    entry = settings.CELERY_BEAT_SCHEDULE["artifact-digest-sweep"]
    assert entry["task"] == "civitas.artifact_digest_sweep"
    assert entry["schedule"].total_seconds() == 24 * 3600


def test_an_intact_store_changes_nothing(stored_kit):
    stored_kit.approved()

    assert governance_digests.artifact_digest_sweep() == {
        "checked": 1,
        "mismatched": 0,
        "suspended": 0,
        "datasets_mismatched": 0,
    }
    assert not _events("model_version.digest_mismatch")
    assert not mail.outbox


def test_a_flipped_byte_suspends_records_and_tells_the_reviewers(
    stored_kit, member_a, django_capture_on_commit_callbacks
):
    use_case = stored_kit.approved()
    version = use_case.model_version
    key, expected = version.artifact_key, version.artifact_digest
    # Another version's intact bundle is left alone.
    other_key, other_digest = _store("tests/intact.zip", b"intact bundle")
    intact = ModelVersionFactory(
        model__agency=member_a.membership.agency,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_key=other_key,
        artifact_digest=other_digest,
    )
    _flip_a_byte(key)
    actual = hashlib.sha256(storages["artifacts"].open(key).read()).hexdigest()

    with django_capture_on_commit_callbacks(execute=True):
        counts = governance_digests.artifact_digest_sweep()

    assert counts == {
        "checked": 2,
        "mismatched": 1,
        "suspended": 1,
        "datasets_mismatched": 0,
    }
    use_case.refresh_from_db()
    version.refresh_from_db()
    intact.refresh_from_db()
    assert use_case.status == UseCaseStatus.SUSPENDED
    assert version.status == VersionStatus.SUSPENDED
    assert version.artifact_state == ArtifactState.FAILED
    assert expected in version.artifact_error and actual in version.artifact_error
    assert intact.artifact_state == ArtifactState.AVAILABLE
    (event,) = _events("model_version.digest_mismatch")
    assert event.payload_data == {
        "model_version_id": version.pk,
        "storage_key": key,
        "expected": expected,
        "actual": actual,
    }
    (suspended,) = _events("use_case.suspended")
    assert suspended.payload_data["reason"] == "digest_mismatch"
    assert _events("model_version.status_changed")[-1].payload_data["to"] == (
        "suspended"
    )
    transition = UseCaseTransition.objects.filter(use_case=use_case).latest("id")
    assert transition.actor is None and "no longer matches" in transition.reason
    (message,) = mail.outbox
    assert message.to == [stored_kit.reviewers[0].email]
    assert expected in message.body and actual in message.body

    # The next sweep finds nothing new to do: the bundle is no longer in use.
    assert governance_digests.artifact_digest_sweep()["mismatched"] == 0
    assert len(_events("model_version.digest_mismatch")) == 1
    assert len(mail.outbox) == 1


def test_a_missing_file_is_a_mismatch_too(member_a):
    key, digest = _store("tests/vanishing.zip", BUNDLE)
    version = ModelVersionFactory(
        model__agency=member_a.membership.agency,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_key=key,
        artifact_digest=digest,
    )
    storages["artifacts"].delete(key)

    mismatch = registry_digests.model_version_digest_check(version_id=version.pk)

    assert (mismatch.expected, mismatch.actual) == (digest, "missing")
    assert governance_digests.model_version_quarantine(mismatch=mismatch) == []
    version.refresh_from_db()
    assert version.artifact_state == ArtifactState.FAILED
    # Twice: recorded once.
    assert governance_digests.model_version_quarantine(mismatch=mismatch) == []
    assert len(_events("model_version.digest_mismatch")) == 1


def test_a_flipped_byte_in_a_dataset_file_refuses_it():
    key, digest = _store("tests/data.jsonl", b'{"text": "The library opens."}\n' * 50)
    dataset_version = DatasetVersionFactory(
        storage_key=key, digest=digest, artifact_state=ArtifactState.AVAILABLE
    )
    _flip_a_byte(key, offset=100)

    found = registry_digests.dataset_version_digest_sweep()

    assert [m.object_id for m in found] == [dataset_version.pk]
    dataset_version.refresh_from_db()
    assert dataset_version.artifact_state == ArtifactState.FAILED
    (event,) = _events("dataset_version.digest_mismatch")
    assert event.payload_data["expected"] == digest
