"""Artifacts on S3-compatible storage (``ARTIFACT_STORAGE_BACKEND=s3``).

Against moto's S3 server, started by the test as a process of its own: a
bundle uploaded through the API lands in the bucket; a worker whose local
var directory is a different one (so it can only read through S3) self-tests
and evaluates it; an object changed in the bucket is refused when read.
Every S3 call holds its timeouts against a peer that never answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
import time
import tracemalloc

import boto3
import pytest
from botocore.exceptions import BotoCoreError
from django.core.files.base import File

from governance.models import EvaluationRun, RunStatus
from governance.services import evaluations as evaluation_services
from registry.models import ArtifactState, ModelVersion
from registry.object_storage import ArtifactS3Storage, StreamingObject
from registry.storage import artifact_storage, copy_verified
from tests.conftest import ROOT, celery_worker, database_url, process_env, wait_until
from tests.factories import AIModelFactory, ModelVersionFactory
from tests.governance.conftest import *  # noqa: F403  (suites, people, clients)
from tests.registry.artifact_bundles import fresh_throttles, put_raw  # noqa: F401
from tests.registry.test_artifacts import _lm_bundle_zip
from tests.silent_peer import silent_peer
from tests.workers.conftest import free_port

BUCKET = "civitas-artifacts"
CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}


@pytest.fixture
def s3_endpoint():
    """moto's S3 server on a free port, as a separate process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), timeout=30, what="moto's S3 server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _answers(url: str) -> bool:
    with contextlib.suppress(BotoCoreError, OSError):
        _client(url).list_buckets()
        return True
    return False


def _client(url: str):
    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


@pytest.fixture
def s3_store(settings, s3_endpoint):
    """The bucket, and the ``artifacts`` storage pointed at it for this test."""
    _client(s3_endpoint).create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "registry.object_storage.ArtifactS3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET, "endpoint_url": s3_endpoint,
                "region_name": "us-east-1", "file_overwrite": False,
                "default_acl": None, **CREDENTIALS,
            },
        },
    }  # fmt: skip
    return s3_endpoint


def _keys(url: str) -> list[str]:
    listed = _client(url).list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return sorted(obj["Key"] for obj in listed)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bundle_uploaded_to_s3_is_evaluated_by_a_worker_elsewhere_and_tamper_refused(
    s3_store, small_suite, api_a, agency_a, member_a, mlflow_store, settings, tmp_path
):
    version = ModelVersionFactory(
        model=AIModelFactory(agency=agency_a, created_by=member_a), created_by=member_a
    )
    elsewhere = tmp_path / "other-host"
    env = process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
        MLFLOW_EXPERIMENT=settings.MLFLOW_EXPERIMENT,
        CIVITAS_VAR_DIR=str(elsewhere),
        ARTIFACT_ROOT=str(elsewhere / "artifacts"),
        ARTIFACT_TMP_DIR=str(elsewhere / "artifact-tmp"),
        ARTIFACT_STORAGE_BACKEND="s3",
        ARTIFACT_S3_BUCKET=BUCKET,
        ARTIFACT_S3_ENDPOINT_URL=s3_store,
        ARTIFACT_S3_REGION="us-east-1",
        ARTIFACT_S3_ACCESS_KEY_ID="testing",
        ARTIFACT_S3_SECRET_ACCESS_KEY="testing",
    )
    body = _lm_bundle_zip(tmp_path)
    digest = hashlib.sha256(body).hexdigest()

    with celery_worker(env, settings.CELERY_TASK_DEFAULT_QUEUE):
        response = put_raw(
            api_a, f"/api/v1/model-versions/{version.pk}/artifact/", body,
            filename="assistant.zip",
        )  # fmt: skip
        assert response.status_code == 202, response.json()
        key = f"model-versions/{version.pk}/{digest}.zip"
        assert key in _keys(s3_store)  # in the bucket, not on this host's disk
        released = wait_until(
            lambda: ModelVersion.objects.filter(
                pk=version.pk, artifact_state__in=["available", "failed"]
            ).first(),
            timeout=120,
            what="the worker's self-test, read through S3",
        )
        assert released.artifact_state == ArtifactState.AVAILABLE, (
            released.artifact_error
        )
        good = evaluation_services.evaluation_request(
            actor=member_a, model_version=released, suite=small_suite
        )
        good = _finished(good.pk)

        # Someone with write access to the bucket swaps the bundle.
        tampered = body[:-10] + b"0" * 10
        _client(s3_store).put_object(Bucket=BUCKET, Key=key, Body=tampered)
        bad = evaluation_services.evaluation_request(
            actor=member_a, model_version=released, suite=small_suite
        )
        bad = _finished(bad.pk)

    assert good.status == RunStatus.SUCCEEDED, good.failure_reason
    assert good.metrics.filter(task="multiple_choice", name="acc").exists()
    assert good.items_key in _keys(s3_store)
    assert bad.status == RunStatus.FAILED
    assert bad.failure_code == "refused"
    assert "digest_mismatch" in bad.failure_reason
    # The worker kept nothing on its own disk: its store was the bucket.
    assert not (elsewhere / "artifacts").exists() or not any(
        (elsewhere / "artifacts").rglob("*.zip")
    )


def _finished(run_id: int) -> EvaluationRun:
    return wait_until(
        lambda: EvaluationRun.objects.filter(
            pk=run_id, status__in=evaluation_services.FINISHED
        ).first(),
        timeout=120,
        what="the evaluation to finish",
    )


def test_reads_stream_and_a_changed_object_is_refused(s3_store, tmp_path):
    storage = ArtifactS3Storage(
        bucket_name=BUCKET, endpoint_url=s3_store, region_name="us-east-1",
        **CREDENTIALS,
    )  # fmt: skip
    content = bytes(range(256)) * (320 * 1024)  # 80 MiB
    spooled = tmp_path / "upload"
    spooled.write_bytes(content)
    # botocore reads its service description (megabytes of JSON) on a
    # client's first call: make it before measuring what a transfer holds.
    storage.exists("warm-up")
    artifact_storage().exists("warm-up")
    with open(spooled, "rb") as source:
        tracemalloc.start()
        key = storage.save("tests/big.bin", File(source))
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    sha256 = hashlib.sha256(content).hexdigest()
    del content

    opened = storage.open(key, "rb")
    assert isinstance(opened, StreamingObject) and opened.size == 80 * 1024**2
    opened.close()
    tracemalloc.start()
    copy_verified(key=key, sha256=sha256, dest=tmp_path / "copy")
    _, read_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (tmp_path / "copy").stat().st_size == 80 * 1024**2
    assert read_peak < 8 * 1024**2  # streamed in 1 MiB chunks, never whole
    # Two 8 MiB parts read ahead, two in flight, and their checksums: bounded
    # by the part size, not the file's.
    assert upload_peak < 40 * 1024**2

    _client(s3_store).put_object(Bucket=BUCKET, Key=key, Body=b"changed")
    from config.exceptions import DomainError

    with pytest.raises(DomainError) as refused:
        copy_verified(key=key, sha256=sha256, dest=tmp_path / "copy2")
    assert refused.value.code == "digest_mismatch"
    assert not (tmp_path / "copy2").exists()


def test_e11_every_s3_call_is_bounded_against_a_peer_that_never_answers(settings):
    settings.ARTIFACT_S3_CONNECT_TIMEOUT = 1
    settings.ARTIFACT_S3_READ_TIMEOUT = 1
    settings.ARTIFACT_S3_MAX_ATTEMPTS = 2
    with silent_peer() as (host, port):
        storage = ArtifactS3Storage(
            bucket_name=BUCKET, endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1", **CREDENTIALS,
        )  # fmt: skip
        calls = {
            "exists": lambda: storage.exists("a"),
            "open": lambda: storage.open("a", "rb"),
            "save": lambda: storage.save("b", File(io.BytesIO(b"x"), name="b")),
            "delete": lambda: storage.delete("a"),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(BotoCoreError):
                call()
            # Two attempts of one second each, plus a backoff: far below this.
            assert time.monotonic() - started < 20, name


def test_settings_choose_the_s3_storage_from_the_environment(tmp_path):
    code = (
        "import django; django.setup()\n"
        "from django.core.files.storage import storages\n"
        "s = storages['artifacts']\n"
        "print(type(s).__name__, s.bucket_name, s.client_config.read_timeout)\n"
    )
    env = process_env(
        CIVITAS_VAR_DIR=str(tmp_path),
        ARTIFACT_STORAGE_BACKEND="s3",
        ARTIFACT_S3_BUCKET=BUCKET,
        ARTIFACT_S3_ENDPOINT_URL="http://127.0.0.1:9",
        ARTIFACT_S3_READ_TIMEOUT="7",
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ArtifactS3Storage", BUCKET, "7.0"]


@pytest.mark.django_db
def test_a_download_streams_the_object_from_the_bucket(
    s3_store, api_a, agency_a, member_a
):
    from django.core.files.base import ContentFile

    from tests.registry.artifact_bundles import tiny_model_bytes

    body = tiny_model_bytes()
    digest = hashlib.sha256(body).hexdigest()
    key = artifact_storage().save(f"tests/{digest}.onnx", ContentFile(body))
    version = ModelVersionFactory(
        model=AIModelFactory(agency=agency_a, created_by=member_a),
        created_by=member_a,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_key=key,
        artifact_digest=digest,
        artifact_size=len(body),
        artifact_format="onnx",
    )

    response = api_a.get(f"/api/v1/model-versions/{version.pk}/download/")

    assert response.status_code == 200
    assert response.streaming
    assert b"".join(response.streaming_content) == body
    assert response["X-Content-SHA256"] == digest
