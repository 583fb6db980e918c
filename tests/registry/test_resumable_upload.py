"""Resumable uploads through the API: parts, resume, checks, completion, cleanup.

Real PostgreSQL and real files: each test has its own artifact store and
scratch directory (``artifact_dirs``); parts are small here (the part size
floor is lowered), the layout and checks are the same as for GiB bundles.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from registry.models import ArtifactState, ModelVersion, UploadSession, UploadState
from registry.services import uploads
from registry.staging import upload_staging_path
from tests.factories import AIModelFactory, ModelVersionFactory
from tests.registry.artifact_bundles import (  # noqa: F401 - fixtures
    artifact_dirs_fixture,
    files_under,
    fresh_throttles,
    put_raw,
    tiny_model_bytes,
    zip_bytes,
)

pytestmark = pytest.mark.django_db

PART = 1024


@pytest.fixture(autouse=True)
def small_parts(settings):
    settings.CIVITAS_UPLOAD_PART_MIN = 256
    settings.CIVITAS_UPLOAD_PART_MAX = 4096
    settings.CIVITAS_UPLOAD_MAX_PARTS = 64


@pytest.fixture
def version_a(agency_a, member_a):
    model = AIModelFactory(agency=agency_a, created_by=member_a)
    return ModelVersionFactory(model=model, created_by=member_a)


def bundle() -> bytes:
    """A valid zip bundle of a few KiB: the model and an incompressible note."""
    note = hashlib.sha256(b"seed").digest() * 160  # 5 KiB, stored as is
    return zip_bytes({"model.onnx": tiny_model_bytes(), "NOTES.bin": note})


def parts_of(body: bytes, size: int = PART) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def _base(version) -> str:
    return f"/api/v1/model-versions/{version.pk}/uploads/"


def create(client, version, body: bytes, **extra):
    data = {"size": len(body), "part_size": PART, "filename": "../../x.zip", **extra}
    return client.post(_base(version), data, format="json")


def put_part(client, version, upload_id, number: int, data: bytes, *, sha=None):
    digest = hashlib.sha256(data).digest() if sha is None else sha
    header = "sha-256=:" + base64.b64encode(digest).decode() + ":"
    return put_raw(
        client,
        f"{_base(version)}{upload_id}/parts/{number}/",
        data,
        HTTP_CONTENT_DIGEST=header,
    )


def complete(client, version, upload_id):
    return client.post(f"{_base(version)}{upload_id}/complete/")


def test_parts_out_of_order_complete_to_the_bundle_and_its_sha256(
    api_a, version_a, artifact_dirs
):
    body = bundle()
    opened = create(api_a, version_a, body)
    assert opened.status_code == 201, opened.json()
    upload_id = opened.json()["id"]
    assert opened.json()["part_count"] == len(parts_of(body)) > 3
    assert opened.json()["original_filename"] == "../../x.zip"  # metadata only
    for number, data in reversed(list(enumerate(parts_of(body), 1))):
        sent = put_part(api_a, version_a, upload_id, number, data)
        assert sent.status_code == 200, sent.json()
        assert sent.json()["sha256"] == hashlib.sha256(data).hexdigest()

    done = complete(api_a, version_a, upload_id)

    assert done.status_code == 202, done.json()
    digest = hashlib.sha256(body).hexdigest()
    assert done.json()["artifact_digest"] == digest
    assert done.json()["artifact_state"] == ArtifactState.PENDING
    version = ModelVersion.objects.get(pk=version_a.pk)
    assert version.artifact_key == f"model-versions/{version_a.pk}/{digest}.zip"
    assert (artifact_dirs.store / version.artifact_key).read_bytes() == body
    assert UploadSession.objects.get(pk=upload_id).state == UploadState.COMPLETED
    assert files_under(artifact_dirs.scratch) == []  # staging renamed away
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"model_version.upload_started", "model_version.artifact_uploaded"} <= (
        actions
    )


def test_an_interrupted_upload_resumes_from_the_parts_the_server_has(
    api_a, version_a, artifact_dirs
):
    body = bundle()
    chunks = parts_of(body)
    upload_id = create(api_a, version_a, body).json()["id"]
    for number in (1, 3):
        assert (
            put_part(
                api_a, version_a, upload_id, number, chunks[number - 1]
            ).status_code
            == 200
        )
    # The client "reloads": it asks which parts are there.
    state = api_a.get(f"{_base(version_a)}{upload_id}/").json()
    assert [p["number"] for p in state["parts"]] == [1, 3]
    early = complete(api_a, version_a, upload_id)
    assert early.status_code == 400
    assert early.json()["code"] == "upload_incomplete"
    have = {p["number"] for p in state["parts"]}
    for number, data in enumerate(chunks, 1):
        if number not in have:
            assert (
                put_part(api_a, version_a, upload_id, number, data).status_code == 200
            )
    # Sending a received part again changes nothing.
    assert put_part(api_a, version_a, upload_id, 1, chunks[0]).status_code == 200

    done = complete(api_a, version_a, upload_id)

    assert done.status_code == 202, done.json()
    assert done.json()["artifact_digest"] == hashlib.sha256(body).hexdigest()


def test_a_part_with_a_wrong_hash_is_refused_and_counts_as_missing(
    api_a, version_a, artifact_dirs
):
    body = bundle()
    chunks = parts_of(body)
    upload_id = create(api_a, version_a, body).json()["id"]
    assert put_part(api_a, version_a, upload_id, 2, chunks[1]).status_code == 200

    wrong = put_part(api_a, version_a, upload_id, 2, chunks[1], sha=b"\0" * 32)
    missing = put_raw(api_a, f"{_base(version_a)}{upload_id}/parts/1/", chunks[0])

    assert wrong.status_code == 400
    assert wrong.json()["code"] == "part_digest_mismatch"
    assert missing.status_code == 400
    assert missing.json()["code"] == "part_digest_missing"
    state = api_a.get(f"{_base(version_a)}{upload_id}/").json()
    assert state["parts"] == []


def test_part_too_large_is_413_and_limits_are_400(api_a, version_a, artifact_dirs):
    body = bundle()
    upload_id = create(api_a, version_a, body).json()["id"]

    big = put_part(api_a, version_a, upload_id, 1, b"x" * (PART + 1))
    short = put_part(api_a, version_a, upload_id, 1, b"x" * (PART - 1))
    beyond = put_part(api_a, version_a, upload_id, 99, b"x" * PART)
    tiny_parts = create(api_a, version_a, body, part_size=16)
    over_cap = create(api_a, version_a, body, size=10**13)

    assert big.status_code == 413
    assert big.json()["code"] == "payload_too_large"
    assert short.json()["code"] == "part_size_mismatch"
    assert beyond.json()["code"] == "part_number_invalid"
    assert tiny_parts.status_code == 400
    assert tiny_parts.json()["code"] == "part_size_invalid"
    assert over_cap.status_code == 413
    assert UploadSession.objects.count() == 1


def test_other_agency_gets_404_on_every_upload_route(
    api_a, api_b, version_a, artifact_dirs
):
    body = bundle()
    upload_id = create(api_a, version_a, body).json()["id"]
    base = f"{_base(version_a)}{upload_id}/"

    assert create(api_b, version_a, body).status_code == 404
    assert api_b.get(base).status_code == 404
    assert put_part(api_b, version_a, upload_id, 1, body[:PART]).status_code == 404
    assert api_b.post(f"{base}complete/").status_code == 404
    assert api_b.delete(base).status_code == 404
    # Another version's URL does not reach the session either.
    other = ModelVersionFactory(model=version_a.model, created_by=version_a.created_by)
    assert api_a.get(f"{_base(other)}{upload_id}/").status_code == 404
    assert UploadSession.objects.get(pk=upload_id).parts.count() == 0


def test_expired_sessions_and_orphan_files_are_cleaned(api_a, version_a, artifact_dirs):
    body = bundle()
    upload_id = create(api_a, version_a, body).json()["id"]
    kept_id = create(api_a, version_a, body).json()["id"]
    assert put_part(api_a, version_a, upload_id, 1, body[:PART]).status_code == 200
    UploadSession.objects.filter(pk=upload_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    late = put_part(api_a, version_a, upload_id, 2, body[PART : 2 * PART])
    assert late.status_code == 409
    assert late.json()["code"] == "upload_expired"
    orphan = upload_staging_path(uuid.uuid4())
    orphan.write_bytes(b"left by a crash")
    old = timezone.now().timestamp() - 2 * 86400
    os.utime(orphan, (old, old))

    assert uploads.upload_session_cleanup() == {"expired": 1, "orphans": 1}

    assert not UploadSession.objects.filter(pk=upload_id).exists()
    assert not upload_staging_path(uuid.UUID(upload_id)).exists()
    assert not orphan.exists()
    assert upload_staging_path(uuid.UUID(kept_id)).exists()


def test_abort_removes_the_session_and_its_data(
    api_a, version_a, artifact_dirs, django_capture_on_commit_callbacks
):
    upload_id = create(api_a, version_a, bundle()).json()["id"]
    assert upload_staging_path(uuid.UUID(upload_id)).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = api_a.delete(f"{_base(version_a)}{upload_id}/")

    assert response.status_code == 204
    assert not UploadSession.objects.filter(pk=upload_id).exists()
    assert not upload_staging_path(uuid.UUID(upload_id)).exists()


def test_a_refused_bundle_fails_the_session_and_keeps_nothing(
    api_a, version_a, artifact_dirs
):
    body = b"not a bundle at all " * 100
    upload_id = create(api_a, version_a, body).json()["id"]
    for number, data in enumerate(parts_of(body), 1):
        assert put_part(api_a, version_a, upload_id, number, data).status_code == 200

    done = complete(api_a, version_a, upload_id)
    again = complete(api_a, version_a, upload_id)

    assert done.status_code == 400
    assert again.status_code == 409
    assert again.json()["code"] == "upload_not_open"
    assert UploadSession.objects.get(pk=upload_id).state == UploadState.FAILED
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []
    assert ModelVersion.objects.get(pk=version_a.pk).artifact_state == "none"


def test_a_wrong_announced_bundle_digest_is_refused(api_a, version_a, artifact_dirs):
    body = bundle()
    upload_id = create(api_a, version_a, body, sha256="ab" * 32).json()["id"]
    for number, data in enumerate(parts_of(body), 1):
        assert put_part(api_a, version_a, upload_id, number, data).status_code == 200

    done = complete(api_a, version_a, upload_id)

    assert done.status_code == 400
    assert done.json()["code"] == "digest_mismatch"
    assert files_under(artifact_dirs.store) == []


@pytest.mark.django_db(transaction=True)
def test_completing_twice_at_once_stores_one_artifact(
    member_a, version_a, artifact_dirs
):
    from tests.registry.conftest import token_client

    client = token_client(member_a)
    body = bundle()
    upload_id = create(client, version_a, body).json()["id"]
    for number, data in enumerate(parts_of(body), 1):
        assert put_part(client, version_a, upload_id, number, data).status_code == 200
    barrier = threading.Barrier(2)
    answers: list[int] = []

    def finish(token_holder: APIClient) -> None:
        try:
            barrier.wait()
            answers.append(complete(token_holder, version_a, upload_id).status_code)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=finish, args=(token_client(member_a),))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == [202, 409]
    assert files_under(artifact_dirs.store) == [
        f"model-versions/{version_a.pk}/{hashlib.sha256(body).hexdigest()}.zip"
    ]
    assert AuditEvent.objects.filter(action="model_version.artifact_uploaded").count()


def test_a_version_with_an_artifact_refuses_a_new_session(
    api_a, version_a, artifact_dirs
):
    assert put_raw(api_a, f"/api/v1/model-versions/{version_a.pk}/artifact/",
                   tiny_model_bytes()).status_code == 202  # fmt: skip

    response = create(api_a, version_a, bundle())

    assert response.status_code == 409
    assert response.json()["code"] == "artifact_pending"


@pytest.mark.django_db(transaction=True)
def test_the_hourly_cleanup_task_runs_on_a_real_worker(
    member_a, version_a, artifact_dirs, settings
):
    from config.celery import app
    from tests.conftest import (
        celery_worker,
        database_url,
        process_env,
        wait_until,
        worker_queues,
    )
    from tests.registry.conftest import token_client

    client = token_client(member_a)
    upload_id = create(client, version_a, bundle()).json()["id"]
    UploadSession.objects.filter(pk=upload_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    env = process_env(
        DATABASE_URL=database_url(), ARTIFACT_TMP_DIR=str(artifact_dirs.scratch)
    )
    assert "upload-cleanup" in app.conf.beat_schedule

    # A housekeeping task: the worker takes both queues, as deployed.
    with celery_worker(env, worker_queues()):
        app.send_task("civitas.upload_cleanup")
        wait_until(
            lambda: not UploadSession.objects.filter(pk=upload_id).exists(),
            timeout=60,
            what="the cleanup task on the worker",
        )

    assert not upload_staging_path(uuid.UUID(upload_id)).exists()
