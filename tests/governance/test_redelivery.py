"""E1/E2: an evaluation whose worker died is run again, and completes once.

The database row is the truth: a ``running`` run whose worker process on this
host is gone is put back to ``queued`` when a worker starts (the embedded
broker never redelivers the killed worker's message) or when the message is
redelivered (Redis, ``acks_late``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from django.conf import settings

from audit.models import AuditEvent
from governance.models import EvaluationRun, EvaluationSuite, RunStatus
from governance.services import evaluations as evaluation_services
from tests.conftest import (
    ROOT,
    celery_worker,
    database_url,
    process_env,
    wait_until,
    worker_queues,
)
from tests.factories import DatasetVersionFactory, LicenceFactory
from tests.governance.conftest import _jsonl, _stored

pytestmark = pytest.mark.django_db


def _dead_worker_label() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}"


def _running(run, *, worker: str, attempts: int = 1) -> None:
    from django.utils import timezone

    # Claimed with a fresh heartbeat: only its worker's death makes it lost.
    EvaluationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        worker=worker,
        attempts=attempts,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )


def _request(member, version, suite):
    return evaluation_services.evaluation_request(
        actor=member, model_version=version, suite=suite, enqueue=False
    )


def test_e1_redelivered_run_whose_worker_died_runs_again_and_succeeds(
    released_lm_version, small_suite, member_a, mlflow_store
):
    run = _request(member_a, released_lm_version, small_suite)
    lost = _dead_worker_label()
    _running(run, worker=lost)

    again = evaluation_services.evaluation_execute(run_id=run.pk)

    assert again.status == RunStatus.SUCCEEDED
    assert again.attempts == 2
    requeued = AuditEvent.objects.get(action="evaluation.requeued")
    assert json.loads(requeued.payload) == {"run_id": run.pk, "lost_worker": lost}
    assert AuditEvent.objects.filter(action="evaluation.succeeded").count() == 1


def test_e6_run_that_lost_its_worker_max_attempts_times_is_failed(
    released_lm_version, small_suite, member_a, settings
):
    run = _request(member_a, released_lm_version, small_suite)
    _running(
        run, worker=_dead_worker_label(), attempts=settings.CIVITAS_EVAL_MAX_ATTEMPTS
    )

    again = evaluation_services.evaluation_execute(run_id=run.pk)

    assert again.status == RunStatus.FAILED
    assert again.failure_code == "worker_lost"
    assert not AuditEvent.objects.filter(action="evaluation.requeued").exists()


def test_e3_run_whose_worker_is_alive_is_not_taken_over_at_worker_start(
    released_lm_version, small_suite, member_a, django_capture_on_commit_callbacks
):
    run = _request(member_a, released_lm_version, small_suite)
    gone = _request(member_a, released_lm_version, small_suite)
    _running(run, worker=f"{socket.gethostname()}:{os.getppid()}")  # alive
    _running(gone, worker=_dead_worker_label())

    with django_capture_on_commit_callbacks() as callbacks:
        assert evaluation_services.evaluation_recover_lost() == 1

    run.refresh_from_db()
    gone.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert (gone.status, gone.worker) == (RunStatus.QUEUED, "")
    assert len(callbacks) == 1  # the lost run's message, sent on commit


def _long_suite() -> EvaluationSuite:
    prompts = _jsonl(
        [
            {"prompt": f"Tell me about service {n}.", "should_refuse": n % 2 == 0}
            for n in range(120)
        ]
    )
    key, digest = _stored("tests/redelivery-refusal.jsonl", prompts)
    return EvaluationSuite.objects.create(
        name="redelivery",
        version="1.0.0",
        licence=LicenceFactory(expression="CC0-1.0"),
        tasks=[
            {
                "task": "refusal",
                "name": "refusal",
                "options": {"max_new_tokens": 32},
                "dataset_version": DatasetVersionFactory(
                    storage_key=key, digest=digest
                ).pk,
            }
        ],
    )


def _send_on_embedded_broker(env: dict[str, str], run_id: int, queue: str) -> None:
    code = (
        "import django; django.setup()\n"
        "from workers.tasks import evaluation_run\n"
        f"evaluation_run.apply_async(({run_id},), queue={queue!r})\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_e2_worker_killed_mid_run_on_embedded_broker_restarts_and_run_completes_once(
    released_lm_version, member_a, mlflow_store, tmp_path
):
    """SIGKILL the whole worker (main and pool) on the kombu SQLite broker."""
    suite = _long_suite()
    broker = f"sqla+sqlite:///{tmp_path / 'celery-broker.sqlite3'}"
    env = process_env(
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=broker,
        CELERY_RESULT_BACKEND=f"db+sqlite:///{tmp_path / 'celery-results.sqlite3'}",
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
        MLFLOW_EXPERIMENT=settings.MLFLOW_EXPERIMENT,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")])),
    )
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    run = _request(member_a, released_lm_version, suite)
    with celery_worker(env, queue) as worker:
        _send_on_embedded_broker(env, run.pk, queue)
        wait_until(
            lambda: EvaluationRun.objects.get(pk=run.pk).status == RunStatus.RUNNING,
            timeout=180,
            what="the run to start",
        )
        os.killpg(worker.pid, signal.SIGKILL)  # main process, pool and engine
        worker.wait()
    killed = EvaluationRun.objects.get(pk=run.pk)
    assert killed.status == RunStatus.RUNNING and killed.attempts == 1

    with celery_worker(env, worker_queues()):
        final = wait_until(
            lambda: EvaluationRun.objects.filter(
                pk=run.pk, status__in=evaluation_services.FINISHED
            ).first(),
            timeout=600,
            what="the restarted worker to finish the run",
        )
        # MLflow's run id arrives through the outbox, just after the run.
        wait_until(
            lambda: EvaluationRun.objects.get(pk=run.pk).mlflow_run_id,
            timeout=60,
            what="the outbox delivery",
        )
        final.refresh_from_db()

    assert final.status == RunStatus.SUCCEEDED, final.failure_reason
    assert final.attempts == 2
    assert final.mlflow_run_id
    events = AuditEvent.objects.filter(object_id=str(run.pk))
    assert events.filter(action="evaluation.requeued").count() == 1
    assert events.filter(action="evaluation.succeeded").count() == 1
    names = list(final.metrics.values_list("task", "name"))
    assert names and len(names) == len(set(names))  # one set of results


# --- Heartbeat-based liveness: a worker anywhere that stopped ---------------


def _held_elsewhere(run, *, beat_age_s: float, attempts: int = 1) -> None:
    from datetime import timedelta

    from django.utils import timezone

    EvaluationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        worker="worker-on-another-host:4242",
        attempts=attempts,
        started_at=timezone.now() - timedelta(seconds=beat_age_s + 60),
        heartbeat_at=timezone.now() - timedelta(seconds=beat_age_s),
    )


def test_default_liveness_settings_settle_a_dead_workers_run_within_two_minutes():
    heartbeat = settings.CIVITAS_EVAL_HEARTBEAT_SECONDS
    stale = settings.CIVITAS_EVAL_STALE_SECONDS
    assert stale >= 3 * heartbeat  # a live worker misses three beats first
    # Last beat, then stale, then the next sweep: the run is queued again.
    assert heartbeat + stale + settings.CIVITAS_EVAL_SWEEP_SECONDS <= 90
    sweep = settings.CELERY_BEAT_SCHEDULE["evaluation-sweep"]
    assert sweep["schedule"].total_seconds() == settings.CIVITAS_EVAL_SWEEP_SECONDS


def test_sweep_queues_again_a_run_whose_heartbeat_went_stale_on_another_host(
    released_lm_version, small_suite, member_a, django_capture_on_commit_callbacks
):
    run = _request(member_a, released_lm_version, small_suite)
    _held_elsewhere(run, beat_age_s=settings.CIVITAS_EVAL_STALE_SECONDS + 1)

    with django_capture_on_commit_callbacks() as callbacks:
        outcome = evaluation_services.evaluation_sweep()

    run.refresh_from_db()
    assert outcome == {"requeued": 1, "failed": 0}
    assert (run.status, run.worker, run.heartbeat_at) == (RunStatus.QUEUED, "", None)
    assert len(callbacks) == 1
    requeued = AuditEvent.objects.get(action="evaluation.requeued")
    assert json.loads(requeued.payload)["lost_worker"] == "worker-on-another-host:4242"


def test_e3_a_run_still_heartbeating_is_never_taken_by_sweep_or_redelivery(
    released_lm_version, small_suite, member_a, django_capture_on_commit_callbacks
):
    run = _request(member_a, released_lm_version, small_suite)
    _held_elsewhere(run, beat_age_s=1)

    with django_capture_on_commit_callbacks() as callbacks:
        outcome = evaluation_services.evaluation_sweep()
        again = evaluation_services.evaluation_execute(run_id=run.pk)  # redelivered

    assert outcome == {"requeued": 0, "failed": 0}
    assert not callbacks
    again.refresh_from_db()
    assert (again.status, again.attempts) == (RunStatus.RUNNING, 1)
    assert again.worker == "worker-on-another-host:4242"
    assert not AuditEvent.objects.filter(
        action__in=["evaluation.requeued", "evaluation.failed"]
    ).exists()


def test_a_worker_whose_run_was_taken_back_records_nothing(
    released_lm_version, small_suite, member_a, mlflow_store
):
    """The result of an attempt that lost its run (stale heartbeat) is discarded."""
    run = _request(member_a, released_lm_version, small_suite)
    assert evaluation_services._claim(run.pk) == 1
    claimed = EvaluationRun.objects.get(pk=run.pk)  # as the attempt loaded it
    # The sweep took it back and another worker claimed it meanwhile.
    EvaluationRun.objects.filter(pk=run.pk).update(worker="another-host:7")
    stopped = evaluation_services._stopped(run.pk)
    result = {
        "results": [{"task": "perplexity", "name": "perplexity",
                     "metrics": {"ppl": 3.0}, "items": []}],
        "engine_version": "1.0.0",
    }  # fmt: skip

    assert stopped() is True
    assert not evaluation_services._fail(
        run.pk, code="crashed", message="x", worker=evaluation_services._worker_label()
    )
    evaluation_services._record_success(claimed, result, [], wall_s=1.0)
    run.refresh_from_db()
    assert (run.status, run.worker) == (RunStatus.RUNNING, "another-host:7")
    assert not run.metrics.exists()
    assert not AuditEvent.objects.filter(action="evaluation.succeeded").exists()


@pytest.mark.django_db(transaction=True)
def test_heartbeat_thread_beats_while_held_and_stops_when_taken_back(
    released_lm_version, small_suite, member_a, settings
):
    settings.CIVITAS_EVAL_HEARTBEAT_SECONDS = 0.2
    run = _request(member_a, released_lm_version, small_suite)
    assert evaluation_services._claim(run.pk) == 1
    first = EvaluationRun.objects.get(pk=run.pk).heartbeat_at

    with evaluation_services._Heartbeat(run.pk) as heartbeat:
        wait_until(
            lambda: EvaluationRun.objects.get(pk=run.pk).heartbeat_at > first,
            timeout=10,
            what="a heartbeat",
        )
        assert not heartbeat.lost.is_set()
        EvaluationRun.objects.filter(pk=run.pk).update(
            status=RunStatus.QUEUED, worker=""
        )  # taken back by a sweep
        wait_until(heartbeat.lost.is_set, timeout=10, what="the beat to stop")
    assert EvaluationRun.objects.get(pk=run.pk).status == RunStatus.QUEUED
