"""Artifacts registered by reference, verified by a real Celery worker over Redis.

The API queues ``civitas.artifact_verify`` (``civitas.dataset_file_verify``
for dataset files) on commit; a separate worker
process (its own settings from the environment, the same test database and
artifact store) copies the file, hashes it, inspects it and releases or
fails the version.
"""

from __future__ import annotations

import hashlib

import pytest
from kombu import Connection

from audit.models import AuditEvent
from registry.models import ArtifactState, DatasetVersion, ModelVersion
from tests.conftest import celery_worker, database_url, process_env, wait_until
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    ModelVersionFactory,
)
from tests.registry.artifact_bundles import (  # noqa: F401 - fixtures
    artifact_dirs_fixture,
    files_under,
    fresh_throttles,
    tar_with_symlink,
    tiny_model_bytes,
    zip_bytes,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def worker_env(artifact_dirs, tmp_path, settings):
    """A reference root, and a worker environment that sees the same files."""
    drop = tmp_path / "drop"
    drop.mkdir()
    settings.CIVITAS_REFERENCE_ROOTS = [str(drop)]
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge(queue)
    env = process_env(
        DATABASE_URL=database_url(),
        ARTIFACT_ROOT=str(artifact_dirs.store),
        ARTIFACT_TMP_DIR=str(artifact_dirs.scratch),
        CIVITAS_REFERENCE_ROOTS=str(drop),
    )
    return env, queue, drop


def _version(agency, user) -> ModelVersion:
    model = AIModelFactory(agency=agency, created_by=user)
    return ModelVersionFactory(model=model, created_by=user)


def _reference(client, version, uri: str, sha256: str):
    return client.post(
        f"/api/v1/model-versions/{version.pk}/artifact/reference/",
        {"uri": uri, "sha256": sha256},
        format="json",
    )


def _settled(version):
    def check():
        current = ModelVersion.objects.get(pk=version.pk)
        return current if current.artifact_state != ArtifactState.PENDING else None

    return check


def test_reference_is_verified_by_a_worker_and_becomes_downloadable(
    api_a, agency_a, member_a, worker_env, artifact_dirs
):
    env, queue, drop = worker_env
    version = _version(agency_a, member_a)
    body = zip_bytes(
        {"bundle/model.onnx": tiny_model_bytes(), "bundle/config.json": b"{}"}
    )
    (drop / "assistant.zip").write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()

    with celery_worker(env, queue):
        response = _reference(api_a, version, (drop / "assistant.zip").as_uri(), digest)
        assert response.status_code == 202, response.json()
        done = wait_until(_settled(version), timeout=120, what="the verification")

    assert done.artifact_state == ArtifactState.AVAILABLE, done.artifact_error
    assert done.artifact_digest == digest
    assert done.artifact_size == len(body)
    assert done.artifact_format == "zip"
    assert done.kind == "generic"
    assert done.released_at is not None
    assert done.original_filename == "assistant.zip"
    assert done.artifact_key == f"model-versions/{version.pk}/{digest}.zip"
    assert (artifact_dirs.store / done.artifact_key).read_bytes() == body
    assert files_under(artifact_dirs.scratch) == []
    [event] = AuditEvent.objects.filter(action="model_version.artifact_verified")
    assert event.actor_id is None
    assert event.object_id == str(version.pk)

    download = api_a.get(f"/api/v1/model-versions/{version.pk}/download/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == body
    assert download["X-Content-SHA256"] == digest


def test_worker_fails_a_mismatch_a_refused_bundle_and_a_missing_file(
    api_a, agency_a, member_a, worker_env, artifact_dirs
):
    env, queue, drop = worker_env
    (drop / "model.onnx").write_bytes(tiny_model_bytes())
    (drop / "linked.tar.gz").write_bytes(tar_with_symlink())
    declared = "0" * 64
    actual = hashlib.sha256(tiny_model_bytes()).hexdigest()
    cases = {
        "mismatch": ((drop / "model.onnx").as_uri(), declared),
        "refused": (
            (drop / "linked.tar.gz").as_uri(),
            hashlib.sha256((drop / "linked.tar.gz").read_bytes()).hexdigest(),
        ),
        "missing": ((drop / "gone.onnx").as_uri(), actual),
    }
    versions = {name: _version(agency_a, member_a) for name in cases}

    with celery_worker(env, queue):
        for name, (uri, sha256) in cases.items():
            assert _reference(api_a, versions[name], uri, sha256).status_code == 202
        settled = {
            name: wait_until(_settled(v), timeout=120, what=f"the {name} verification")
            for name, v in versions.items()
        }

    assert {v.artifact_state for v in settled.values()} == {ArtifactState.FAILED}
    mismatch = settled["mismatch"].artifact_error
    assert actual in mismatch
    assert declared in mismatch
    assert "link_member" in settled["refused"].artifact_error
    assert "No file at" in settled["missing"].artifact_error
    for version in settled.values():
        assert version.released_at is None
        assert version.artifact_digest == ""
        response = api_a.get(f"/api/v1/model-versions/{version.pk}/download/")
        assert response.status_code == 409
        assert response.json()["code"] == "artifact_not_available"
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []
    assert (
        AuditEvent.objects.filter(
            action="model_version.artifact_verification_failed"
        ).count()
        == 3
    )

    # A refused reference may be replaced by an upload.
    retry = api_a.put(
        f"/api/v1/model-versions/{versions['mismatch'].pk}/artifact/",
        data=tiny_model_bytes(),
        content_type="application/octet-stream",
    )
    assert retry.status_code == 202, retry.json()
    assert retry.json()["source_uri"] == ""
    assert retry.json()["artifact_error"] == ""


def test_dataset_reference_is_verified_by_a_worker_or_fails_on_a_mismatch(
    api_a, agency_a, member_a, worker_env, artifact_dirs
):
    env, queue, drop = worker_env
    body = b'{"q": "When is bulky waste collected?", "a": "Tuesdays"}\n' * 200
    (drop / "arden-faq.jsonl").write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    dataset = DatasetFactory(agency=agency_a, created_by=member_a)
    good = DatasetVersionFactory(dataset=dataset, created_by=member_a, version="1.0.0")
    bad = DatasetVersionFactory(dataset=dataset, created_by=member_a, version="1.0.1")

    def settled(version):
        def check():
            current = DatasetVersion.objects.get(pk=version.pk)
            return current if current.artifact_state != ArtifactState.PENDING else None

        return check

    with celery_worker(env, queue):
        for version, sha256 in ((good, digest), (bad, "0" * 64)):
            response = api_a.post(
                f"/api/v1/dataset-versions/{version.pk}/file/reference/",
                {"uri": (drop / "arden-faq.jsonl").as_uri(), "sha256": sha256},
                format="json",
            )
            assert response.status_code == 202, response.json()
        done = wait_until(settled(good), timeout=120, what="the verification")
        failed = wait_until(settled(bad), timeout=120, what="the mismatch")

    assert done.artifact_state == ArtifactState.AVAILABLE, done.artifact_error
    assert done.digest == digest
    assert done.size_bytes == len(body)
    assert done.storage_key == f"dataset-versions/{good.pk}/{digest}.jsonl"
    assert (artifact_dirs.store / done.storage_key).read_bytes() == body
    [event] = AuditEvent.objects.filter(action="dataset_version.file_verified")
    assert event.actor_id is None
    assert event.object_id == str(good.pk)
    download = api_a.get(f"/api/v1/dataset-versions/{good.pk}/download/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == body
    assert download["X-Content-SHA256"] == digest

    assert failed.artifact_state == ArtifactState.FAILED
    assert digest in failed.artifact_error
    assert "0" * 64 in failed.artifact_error
    assert failed.storage_key == failed.digest == ""
    assert files_under(artifact_dirs.store) == [done.storage_key]
    assert files_under(artifact_dirs.scratch) == []


def test_b11_uploads_are_self_tested_by_the_worker_and_a_loop_is_refused(
    api_a, agency_a, member_a, worker_env, artifact_dirs
):
    from tests.engine.looping_models import looping_tensor_model_bytes

    env, queue, _ = worker_env
    env = {**env, "CIVITAS_SELFTEST_TIMEOUT_SECONDS": "3"}
    good, spinning = _version(agency_a, member_a), _version(agency_a, member_a)

    with celery_worker(env, queue):
        for version, body in ((good, tiny_model_bytes()),
                              (spinning, looping_tensor_model_bytes())):  # fmt: skip
            response = api_a.put(
                f"/api/v1/model-versions/{version.pk}/artifact/",
                data=body,
                content_type="application/octet-stream",
            )
            assert response.status_code == 202, response.json()
            assert response.json()["artifact_state"] == "pending"
        released = wait_until(_settled(good), timeout=120, what="the self-test")
        refused = wait_until(_settled(spinning), timeout=60, what="the refusal")

    assert released.artifact_state == ArtifactState.AVAILABLE, released.artifact_error
    assert released.released_at is not None
    assert released.selftest["passed"] is True
    assert refused.artifact_state == ArtifactState.FAILED
    assert "selftest_failed" in refused.artifact_error
    assert "timeout" in refused.artifact_error
    assert refused.released_at is None
    assert files_under(artifact_dirs.store) == [released.artifact_key]
    assert files_under(artifact_dirs.scratch) == []
