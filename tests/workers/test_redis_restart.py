"""Redis restarted while runs are queued and running: no run is lost.

A private ``redis-server`` (``--appendonly yes --dir <tmp>``, as deploy runs
it) is the broker of a real worker. Three runs are queued; while the first
runs, Redis is stopped and started again on the same port and files. The
queued messages survive in the append-only file, the worker reconnects, and
the message of the run that was under way comes back after the visibility
timeout (shortened here so the test stays short) and changes nothing: every
run ends ``succeeded``, each with one attempt.
"""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from governance.models import EvaluationRun, RunStatus
from governance.services import evaluations as evaluation_services
from tests.conftest import celery_worker, wait_until
from tests.workers.conftest import publish, request_run, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_e4_redis_restarted_with_runs_queued_and_running_loses_no_run(
    released_lm_version, slow_suite, small_suite, member_a, worker_env, queues,
    private_redis,
):  # fmt: skip
    default, _ = queues
    env = {
        **worker_env,
        "CELERY_BROKER_URL": private_redis.url,
        "CELERY_RESULT_BACKEND": private_redis.url,
        "CELERY_VISIBILITY_TIMEOUT": "20",
    }
    runs = [request_run(member_a, released_lm_version, slow_suite)] + [
        request_run(member_a, released_lm_version, small_suite) for _ in range(2)
    ]
    publish(
        env,
        *[("civitas.evaluation_run", {"run_id": r.pk}, default, None) for r in runs],
    )

    with celery_worker(env, default):
        wait_running(runs[0].pk)
        private_redis.stop()
        assert EvaluationRun.objects.filter(status=RunStatus.QUEUED).count() >= 1
        private_redis.start()
        wait_until(
            lambda: not EvaluationRun.objects.exclude(
                status__in=evaluation_services.FINISHED
            ).exists(),
            timeout=240,
            what="every run to finish after the restart",
        )

    for run in EvaluationRun.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.status == RunStatus.SUCCEEDED, (run.pk, run.failure_reason)
        assert run.attempts == 1
    assert AuditEvent.objects.filter(action="evaluation.succeeded").count() == 3
