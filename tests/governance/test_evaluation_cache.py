"""Evaluation runs through the worker's bundle cache (PostgreSQL, ONNX Runtime).

The second run of a version is neither copied, hashed nor extracted again;
a poisoned cache entry is rebuilt from the store; a tampered artifact still
fails its run cleanly (``digest_mismatch``), with nothing cached; an object
swapped in the store after it was cached (on the filesystem, even with its
size, inode and mtime kept; on S3, against moto's server) is noticed by the
store's fingerprint and refuses the next run as without the cache.
"""

from __future__ import annotations

import logging
import os
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from governance.models import EvaluationRun, RunStatus
from governance.services import bundle_cache, outbox
from governance.services import evaluations as evaluation_services
from registry import fingerprint
from registry.object_storage import ArtifactS3Storage
from tests.registry import test_s3_storage as s3
from tests.registry.test_s3_storage import BUCKET, _client

pytestmark = [pytest.mark.django_db(transaction=True)]
# moto's S3 server and the ``artifacts`` storage pointed at it.
s3_endpoint, s3_store = s3.s3_endpoint, s3.s3_store


@pytest.fixture
def fresh_cache(settings, monkeypatch):
    settings.CIVITAS_EVAL_BUNDLE_CACHE_BYTES = 10**9
    # The fixtures store the artifact just before the first run: vouch for
    # it at once (the settling delay has its own test).
    monkeypatch.setattr(fingerprint, "SETTLE_SECONDS", 0)
    bundle_cache._caches.clear()
    yield
    for cache in bundle_cache._caches.values():
        cache.clear()
    bundle_cache._caches.clear()


@pytest.fixture
def timings(caplog):
    caplog.set_level(logging.INFO, logger=evaluation_services.logger.name)

    def last() -> dict:
        found = [
            r.timings for r in caplog.records if r.getMessage() == "evaluation_timings"
        ]
        return found[-1]

    return last


def _run(version, suite, actor):
    run = evaluation_services.evaluation_request(
        actor=actor, model_version=version, suite=suite, enqueue=False
    )
    run = evaluation_services.evaluation_execute(run_id=run.pk)
    outbox.outbox_deliver()
    run.refresh_from_db()
    return run


def test_a_second_run_reuses_the_verified_extraction(
    released_lm_version, small_suite, member_a, mlflow_store, fresh_cache, timings
):
    first = _run(released_lm_version, small_suite, member_a)
    first_timings = timings()
    second = _run(released_lm_version, small_suite, member_a)
    second_timings = timings()

    assert first.status == second.status == RunStatus.SUCCEEDED
    assert first_timings["cache"] == "miss" and second_timings["cache"] == "hit"
    assert first_timings["copy_verify_s"] > 0
    assert first_timings["cache_extract_s"] > 0
    # Nothing copied, hashed or extracted again: a stat of each entry only.
    assert "copy_verify_s" not in second_timings
    assert "cache_extract_s" not in second_timings
    assert second_timings["cache_check_s"] < 0.5
    for key in ("load_s", "tasks_s", "child_s", "record_s", "bundle_s"):
        assert second_timings[key] >= 0
    perplexity = {
        (m.task, m.name): m.value
        for m in first.metrics.all()
        if m.name in ("perplexity", "accuracy")
    }
    assert perplexity and perplexity == {
        (m.task, m.name): m.value
        for m in second.metrics.all()
        if m.name in ("perplexity", "accuracy")
    }
    (cache,) = bundle_cache._caches.values()
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1
    assert cache.stats()["store_changed"] == 0  # the stat said: same file
    assert second_timings["store_check_s"] < 0.5


def _refused(run) -> bool:
    return (
        run.status == RunStatus.FAILED
        and run.failure_code == "refused"
        and "digest_mismatch" in run.failure_reason
    )


def test_a_file_swapped_in_the_store_in_place_refuses_the_next_run(
    released_lm_version, small_suite, member_a, mlflow_store, fresh_cache, timings
):
    """Same inode, size and mtime (put back with utime): the ctime tells."""
    first = _run(released_lm_version, small_suite, member_a)
    path = storages["artifacts"].path(released_lm_version.artifact_key)
    before = os.stat(path)
    with open(path, "r+b") as stored:  # someone with write access to the store
        stored.seek(-10, os.SEEK_END)
        stored.write(b"0" * 10)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns,
    )  # fmt: skip

    second = _run(released_lm_version, small_suite, member_a)

    assert first.status == RunStatus.SUCCEEDED and _refused(second)
    (cache,) = bundle_cache._caches.values()
    assert cache.stats()["store_changed"] == 1
    assert cache.stats()["entries"] == 0 and list(cache.root.iterdir()) == []


@pytest.mark.slow
def test_s3_an_object_swapped_in_the_bucket_refuses_the_next_run(
    s3_store, released_lm_version, small_suite, member_a, mlflow_store,
    fresh_cache, timings,
):  # fmt: skip
    """Against moto's S3 server: a HEAD before each hit, a swap refused."""
    assert isinstance(storages["artifacts"], ArtifactS3Storage)
    key = released_lm_version.artifact_key
    first = _run(released_lm_version, small_suite, member_a)
    second = _run(released_lm_version, small_suite, member_a)
    reused = timings()
    body = _client(s3_store).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    _client(s3_store).put_object(Bucket=BUCKET, Key=key, Body=body[:-10] + b"0" * 10)

    third = _run(released_lm_version, small_suite, member_a)

    assert first.status == second.status == RunStatus.SUCCEEDED
    assert reused["cache"] == "hit" and "copy_verify_s" not in reused
    assert _refused(third)
    (cache,) = bundle_cache._caches.values()
    assert cache.stats()["hits"] == 1 and cache.stats()["store_changed"] == 1
    assert cache.stats()["entries"] == 0


def test_a_fingerprint_vouches_only_for_a_settled_file(tmp_path, monkeypatch):
    path = tmp_path / "artifact.zip"
    path.write_bytes(b"bundle")
    assert fingerprint.file_fingerprint(str(path)) is None  # written just now
    monkeypatch.setattr(fingerprint, "SETTLE_SECONDS", 0)
    settled = fingerprint.file_fingerprint(str(path))
    assert settled == fingerprint.file_fingerprint(str(path))
    time.sleep(0.05)  # past the clock tick of the write
    os.chmod(path, 0o600)  # nothing else changes: the ctime does
    assert fingerprint.file_fingerprint(str(path)) != settled
    assert fingerprint.file_fingerprint(str(tmp_path / "gone")) is None


def test_a_poisoned_entry_is_rebuilt_from_the_store(
    released_lm_version, small_suite, member_a, mlflow_store, fresh_cache, timings
):
    _run(released_lm_version, small_suite, member_a)
    (cache,) = bundle_cache._caches.values()
    root = cache.lookup(released_lm_version.artifact_digest)
    model = root / "model.onnx"
    os.chmod(model, 0o644)
    model.write_bytes(b"\x00" * model.stat().st_size)  # a poisoned graph

    run = _run(released_lm_version, small_suite, member_a)

    assert run.status == RunStatus.SUCCEEDED
    assert timings()["cache"] == "miss"
    assert cache.stats()["rejected"] == 1


def test_a_tampered_artifact_fails_the_run_and_caches_nothing(
    released_lm_version, small_suite, member_a, mlflow_store, fresh_cache
):
    key = released_lm_version.artifact_key
    store = storages["artifacts"]
    store.delete(key)
    store.save(key, ContentFile(b"PK\x03\x04 not the registered bytes"))

    run = _run(released_lm_version, small_suite, member_a)

    assert run.status == RunStatus.FAILED
    assert "digest_mismatch" in run.failure_reason
    (cache,) = bundle_cache._caches.values()
    assert cache.stats()["entries"] == 0
    assert list(cache.root.iterdir()) == []


def test_with_the_cache_off_every_run_copies_and_the_child_verifies(
    released_lm_version, small_suite, member_a, mlflow_store, settings, timings
):
    settings.CIVITAS_EVAL_BUNDLE_CACHE_BYTES = 0

    run = _run(released_lm_version, small_suite, member_a)

    assert run.status == RunStatus.SUCCEEDED
    assert "cache" not in timings()
    assert timings()["digest_s"] > 0 and timings()["extract_s"] > 0


@pytest.mark.slow
def test_a_real_worker_verifies_once_and_serves_the_second_run_from_its_cache(
    released_lm_version, small_suite, member_a, mlflow_store, tmp_path
):
    """Celery worker over Redis: the second run finds the same read-only files."""
    from django.conf import settings as django_settings

    from tests.conftest import celery_worker, database_url, process_env, wait_until

    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    env = process_env(
        DATABASE_URL=database_url(),
        TMPDIR=str(worker_tmp),
        MLFLOW_TRACKING_URI=django_settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=django_settings.MLFLOW_ARTIFACT_ROOT,
        MLFLOW_EXPERIMENT=django_settings.MLFLOW_EXPERIMENT,
    )
    digest = released_lm_version.artifact_digest

    def finished(run_id):
        run = EvaluationRun.objects.get(pk=run_id)
        return run if run.status in evaluation_services.FINISHED else None

    with celery_worker(env, django_settings.CELERY_TASK_DEFAULT_QUEUE):
        stamps = []
        for _ in range(2):
            run = evaluation_services.evaluation_request(
                actor=member_a, model_version=released_lm_version, suite=small_suite
            )
            run = wait_until(
                lambda pk=run.pk: finished(pk), timeout=180, what="the run"
            )
            assert run.status == RunStatus.SUCCEEDED, run.failure_reason
            (model,) = worker_tmp.glob(
                f"civitas-bundles-p*-cache/{digest}/**/model.onnx"
            )
            info = model.stat()
            stamps.append((info.st_ino, info.st_ctime_ns, info.st_mode & 0o777))

    assert stamps[0] == stamps[1]  # not copied or extracted again
    assert stamps[0][2] == 0o444
    # The runs' own scratch folders are gone; only the cache remains.
    assert not list(worker_tmp.glob("civitas-eval-*"))


def test_the_periodic_sweep_removes_the_cache_of_a_dead_worker(tmp_path):
    from tests.engine.test_eval_overhead import dead_workers_cache

    dead = dead_workers_cache(tmp_path)

    assert evaluation_services.evaluation_scratch_sweep(root=str(tmp_path)) == {
        "removed": 1
    }
    assert not dead.exists()
