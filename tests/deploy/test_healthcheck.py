"""deploy/healthcheck.py: the answers compose's health checks rely on.

Web, the workers and MLflow are asked for real by ``make deploy-check``
(test_deploy_check.py); here, beat's rule (a periodic task sent recently)
against the test database, and a worker node that does not exist.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tests.conftest import ROOT, database_url, process_env


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "deploy/healthcheck.py", *args], cwd=ROOT,
        env=process_env(DATABASE_URL=database_url()),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_beat_is_healthy_only_while_it_sends_periodic_tasks():
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    task = PeriodicTask.objects.create(
        name="probe", task="civitas.ping", interval=every,
        last_run_at=timezone.now() - timedelta(minutes=30),
    )  # fmt: skip

    stale = _check("beat", "--max-age", "600")
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=timezone.now())
    fresh = _check("beat", "--max-age", "600")

    assert stale.returncode == 1 and "no periodic task sent" in stale.stdout
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr


def test_a_worker_node_that_does_not_answer_is_unhealthy():
    result = _check("worker", "--node", "nobody@nowhere", "--timeout", "1")

    assert result.returncode == 1
    assert "nobody@nowhere did not answer a ping" in result.stdout
