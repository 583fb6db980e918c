"""Custody of a running evaluation: cancel kills the child; no orphan scratch.

Real Celery worker over Redis, real PostgreSQL, a real ONNX classifier whose
graph never ends (an endless ``Loop``). The worker's temporary directory is
the test's own, so its scratch folders (``civitas-eval-*``) can be watched.
"""

from __future__ import annotations

import io
import os
import signal
import time
import zipfile

import psutil
import pytest
from django.conf import settings

from governance.models import EvaluationRun, EvaluationSuite, RunStatus
from governance.services import evaluations as evaluation_services
from registry.models import ArtifactState, ModelKind
from tests.conftest import celery_worker, database_url, process_env, wait_until
from tests.engine.looping_models import write_looping_classifier
from tests.factories import DatasetVersionFactory, LicenceFactory, ModelVersionFactory
from tests.governance.conftest import _jsonl, _stored
from tests.registry.conftest import token_client

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def looping_classifier_zip(tmp_path_factory) -> bytes:
    import modelgen

    tokenizer = modelgen.train_tokenizer(
        [t for _, t in modelgen.corpus_documents()], 300
    )
    folder = write_looping_classifier(
        tmp_path_factory.mktemp("spin") / "classifier", tokenizer
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"classifier/{path.name}")
    return buffer.getvalue()


@pytest.fixture
def spinning_run_setup(looping_classifier_zip, member_a, tmp_path, mlflow_store):
    """A released looping classifier, a classification suite, a worker env."""
    key, digest = _stored("tests/spin.zip", looping_classifier_zip)
    version = ModelVersionFactory(
        model__agency=member_a.membership.agency,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_key=key,
        artifact_digest=digest,
        artifact_size=len(looping_classifier_zip),
        artifact_format="zip",
        kind=ModelKind.SEQ_CLASSIFIER,
    )
    data_key, data_digest = _stored(
        "tests/spin.jsonl",
        _jsonl([{"text": "Bins go out on Monday.", "label": "yes"}] * 2),
    )
    suite = EvaluationSuite.objects.create(
        name="spin",
        version="1.0.0",
        licence=LicenceFactory(expression="CC0-1.0"),
        tasks=[
            {
                "task": "classification",
                "name": "classification",
                "options": {},
                "dataset_version": DatasetVersionFactory(
                    storage_key=data_key, digest=data_digest
                ).pk,
            }
        ],
    )
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    env = process_env(
        DATABASE_URL=database_url(),
        TMPDIR=str(worker_tmp),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
        MLFLOW_EXPERIMENT=settings.MLFLOW_EXPERIMENT,
    )
    return version, suite, env, worker_tmp


def _engine_children(worker) -> list[psutil.Process]:
    """The sandbox children below the worker's pool process, once running."""
    pools = psutil.Process(worker.pid).children()
    return [child for pool in pools for child in pool.children(recursive=True)]


def _start_spinning(member_a, version, suite, worker, worker_tmp):
    run = evaluation_services.evaluation_request(
        actor=member_a, model_version=version, suite=suite
    )
    wait_until(
        lambda: EvaluationRun.objects.get(pk=run.pk).status == RunStatus.RUNNING,
        timeout=120,
        what="the run to start",
    )
    def engine_children():
        current = EvaluationRun.objects.get(pk=run.pk)
        assert current.status == RunStatus.RUNNING, current.failure_reason
        return _engine_children(worker)

    children = wait_until(engine_children, timeout=60, what="the engine child")
    # Let the child get into the endless Loop.
    time.sleep(2)
    assert list(worker_tmp.glob("civitas-eval-*")), "no scratch folder while running"
    return run, children


def test_b10_cancelling_a_running_evaluation_kills_its_child_within_seconds(
    spinning_run_setup, member_a
):
    version, suite, env, worker_tmp = spinning_run_setup
    api = token_client(member_a)

    with celery_worker(env, settings.CELERY_TASK_DEFAULT_QUEUE) as worker:
        run, children = _start_spinning(member_a, version, suite, worker, worker_tmp)
        assert all(child.is_running() for child in children)

        started = time.monotonic()
        response = api.post(f"/api/v1/evaluations/{run.pk}/cancel/")
        assert response.status_code == 200, response.content
        _, alive = psutil.wait_procs(children, timeout=10)
        elapsed = time.monotonic() - started

        assert alive == [], f"child still running {elapsed:.1f} s after cancel"
        assert elapsed < 10
        wait_until(
            lambda: not list(worker_tmp.glob("civitas-eval-*")),
            timeout=10,
            what="the scratch folders to be removed",
        )
        assert psutil.Process(worker.pid).is_running()  # the worker lives on

    final = EvaluationRun.objects.get(pk=run.pk)
    assert final.status == RunStatus.CANCELLED
    assert final.failure_code == ""


def test_b10_scratch_of_a_killed_worker_is_removed_by_the_sweep(
    spinning_run_setup, member_a, settings
):
    version, suite, env, worker_tmp = spinning_run_setup
    # The worker keeps a bundle cache (on by default), which the sweep removes too.

    with celery_worker(env, settings.CELERY_TASK_DEFAULT_QUEUE) as worker:
        _, children = _start_spinning(member_a, version, suite, worker, worker_tmp)
        left = sorted(p.name for p in worker_tmp.glob("civitas-eval-*"))
        os.killpg(worker.pid, signal.SIGKILL)  # main process and pool, no cleanup
        worker.wait()
        # The engine child dies with its parent (PR_SET_PDEATHSIG).
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []

    assert sorted(p.name for p in worker_tmp.glob("civitas-eval-*")) == left
    settings.CIVITAS_SCRATCH_SWEEP_AGE_SECONDS = 0

    # The killed worker's bundle cache (engine.bundlecache) goes with them.
    caches = list(worker_tmp.glob("civitas-bundles-p*-cache"))
    assert len(caches) == 1

    result = evaluation_services.evaluation_scratch_sweep(root=str(worker_tmp))

    assert result == {"removed": len(left) + len(caches)}
    assert list(worker_tmp.glob("civitas-eval-*")) == []
    assert list(worker_tmp.glob("civitas-bundles-*")) == []


def test_b10_scratch_sweep_is_scheduled_by_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["scratch-sweep"]

    assert entry["task"] == "civitas.evaluation_scratch_sweep"
    assert settings.CIVITAS_SCRATCH_SWEEP_AGE_SECONDS >= (
        settings.CIVITAS_EVAL_TIMEOUT_SECONDS
    )
