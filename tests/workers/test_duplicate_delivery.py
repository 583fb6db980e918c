"""The same message delivered twice: one run executes once.

Two real workers consume the queue and the same task (same task id) is
published twice, as a broker that redelivers would: one worker claims the
run, the other finds it claimed (or finished) and changes nothing. One
attempt, one set of metrics, one ``evaluation.succeeded`` audit event.
"""

from __future__ import annotations

import uuid

import pytest

from audit.models import AuditEvent
from governance.models import EvaluationRun, RunMetric, RunStatus
from governance.services import evaluations as evaluation_services
from tests.conftest import celery_worker, wait_until
from tests.workers.conftest import publish, request_run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_e8_same_message_twice_runs_the_evaluation_once(
    released_lm_version, small_suite, member_a, worker_env, queues
):
    default, _ = queues
    run = request_run(member_a, released_lm_version, small_suite)
    task_id = str(uuid.uuid4())
    message = ("civitas.evaluation_run", {"run_id": run.pk}, default, task_id)
    publish(worker_env, message, message)

    with celery_worker(worker_env, default), celery_worker(worker_env, default):
        final = wait_until(
            lambda: EvaluationRun.objects.filter(
                pk=run.pk, status__in=evaluation_services.FINISHED
            ).first(),
            timeout=120,
            what="the run to finish",
        )
        # Both deliveries consumed: the queue is empty before the workers stop.
        wait_until(
            lambda: _queue_length(default) == 0, timeout=60, what="both deliveries"
        )

    assert final.status == RunStatus.SUCCEEDED, final.failure_reason
    assert final.attempts == 1
    assert EvaluationRun.objects.count() == 1
    events = AuditEvent.objects.filter(object_id=str(run.pk))
    assert events.filter(action="evaluation.succeeded").count() == 1
    assert not events.filter(action__in=["evaluation.requeued", "evaluation.failed"])
    metrics = list(RunMetric.objects.filter(run=final).values_list("task", "name"))
    assert metrics and len(metrics) == len(set(metrics))


def _queue_length(queue: str) -> int:
    from config.celery import app

    with app.connection_for_write() as connection:
        return connection.default_channel.client.llen(queue)
