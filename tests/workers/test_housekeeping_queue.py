"""Housekeeping has its own queue and worker: long evaluations never delay it."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from config.celery import app
from governance.models import EvaluationRun, RunStatus
from tests.conftest import ROOT, celery_worker, wait_until
from tests.workers.conftest import publish, request_run, wait_running

# Short tasks queued on events rather than by beat; routed by name or pattern.
EVENT_HOUSEKEEPING = [
    "civitas.mlflow_outbox_deliver",
    "civitas.schedule_tick",
    "civitas.schedule_settle_run",
    "civitas.webhook_deliver",
    "civitas.notification_email",
    "civitas.future_sweep",  # a sweep named later lands there by the pattern
]
# Long work: evaluations, artifact checks and the daily re-hash of every
# stored artifact (a beat task, but hours of hashing on a large store).
DEFAULT_QUEUE_TASKS = [
    "civitas.evaluation_run",
    "civitas.artifact_verify",
    "civitas.dataset_file_verify",
    "civitas.artifact_digest_sweep",
    "civitas.ping",
]


def _queue_of(task_name: str) -> str:
    return app.amqp.router.route({}, task_name)["queue"].name


def test_every_beat_task_and_housekeeping_pattern_goes_to_the_housekeeping_queue():
    housekeeping = settings.CELERY_HOUSEKEEPING_QUEUE
    assert housekeeping == f"{settings.CELERY_TASK_DEFAULT_QUEUE}-housekeeping"
    beat_tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "civitas.evaluation_sweep" in beat_tasks
    beat_tasks -= set(DEFAULT_QUEUE_TASKS)
    for name in [*beat_tasks, "civitas.usecase_recheck", *EVENT_HOUSEKEEPING]:
        assert _queue_of(name) == housekeeping, name
    for name in DEFAULT_QUEUE_TASKS:
        assert _queue_of(name) == settings.CELERY_TASK_DEFAULT_QUEUE, name


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beat_sweep_runs_on_housekeeping_worker_while_evaluation_worker_is_busy(
    released_lm_version, long_suite, member_a, worker_env, queues
):
    default, housekeeping = queues
    env = {**worker_env, "CIVITAS_EVAL_SWEEP_SECONDS": "1"}
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        with celery_worker(env, housekeeping), celery_worker(env, default):
            busy = request_run(member_a, released_lm_version, long_suite)
            publish(env, ("civitas.evaluation_run", {"run_id": busy.pk}, default, None))
            wait_running(busy.pk)
            # A run whose worker elsewhere stopped, with no attempts left: only
            # the sweep (beat, every second here) fails it.
            stale = request_run(member_a, released_lm_version, long_suite)
            EvaluationRun.objects.filter(pk=stale.pk).update(
                status=RunStatus.RUNNING,
                worker="worker-on-another-host:4242",
                attempts=settings.CIVITAS_EVAL_MAX_ATTEMPTS,
                heartbeat_at=timezone.now() - timedelta(hours=1),
            )
            failed = wait_until(
                lambda: EvaluationRun.objects.filter(
                    pk=stale.pk, status=RunStatus.FAILED
                ).first(),
                timeout=60,
                what="the sweep to settle the stale run",
            )
            still = EvaluationRun.objects.get(pk=busy.pk)
    finally:
        beat.terminate()
        beat.wait(timeout=30)

    assert failed.failure_code == "worker_lost"
    # The evaluation worker was busy the whole time: the sweep ran elsewhere.
    assert still.status == RunStatus.RUNNING, (still.status, still.finished_at)
