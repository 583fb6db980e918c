"""A worker killed with SIGKILL mid-run: the run is run again and finishes
within two minutes, counted once (attempts, metrics, audit events).

The fault is real: a Celery worker on Redis runs the evaluation, its whole
process group (main process, pool child, engine child) is killed with
SIGKILL, and another worker is started. Its message stays unacknowledged in
Redis; the database row, not the broker, brings the run back.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from audit.models import AuditEvent
from governance.models import EvaluationRun, RunMetric, RunStatus
from governance.services import evaluations as evaluation_services
from tests.conftest import celery_worker, wait_until
from tests.workers.conftest import publish, request_run, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_e2_worker_killed_mid_run_on_redis_runs_again_within_two_minutes_once(
    released_lm_version, slow_suite, member_a, worker_env, queues
):
    default, _ = queues
    run = request_run(member_a, released_lm_version, slow_suite)
    with celery_worker(worker_env, default) as worker:
        message = ("civitas.evaluation_run", {"run_id": run.pk}, default, None)
        publish(worker_env, message)
        wait_running(run.pk)
        os.killpg(worker.pid, signal.SIGKILL)  # main process, pool and engine
        worker.wait()
    killed_at = time.monotonic()
    killed = EvaluationRun.objects.get(pk=run.pk)
    assert (killed.status, killed.attempts) == (RunStatus.RUNNING, 1)

    with celery_worker(worker_env, default):
        final = wait_until(
            lambda: EvaluationRun.objects.filter(
                pk=run.pk, status__in=evaluation_services.FINISHED
            ).first(),
            timeout=120,
            what="the run to finish within two minutes of the kill",
        )
    assert time.monotonic() - killed_at < 120
    assert final.status == RunStatus.SUCCEEDED, final.failure_reason
    assert final.attempts == 2
    events = AuditEvent.objects.filter(object_id=str(run.pk))
    assert events.filter(action="evaluation.requeued").count() == 1
    assert events.filter(action="evaluation.succeeded").count() == 1
    assert not events.filter(action="evaluation.failed").exists()
    metrics = list(RunMetric.objects.filter(run=final).values_list("task", "name"))
    assert metrics and len(metrics) == len(set(metrics))  # one set of results
