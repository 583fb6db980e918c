"""MLflow never blocks a run: the outbox, its delivery, drift and health (E11, E12).

Against a real ``mlflow server`` process (``tests/mlflow_server.py``) that
the tests stop and start, a real Celery worker, and ``tests/silent_peer.py``
for the timeouts.
"""

from __future__ import annotations

import time
import uuid
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from mlflow import MlflowClient

from audit.models import AuditEvent
from governance import tracking
from governance.models import EvaluationRun, OutboxKind, OutboxMessage, RunStatus
from governance.services import evaluations as evaluation_services
from governance.services import outbox
from tests.conftest import (
    celery_worker,
    database_url,
    process_env,
    wait_until,
    worker_queues,
)
from tests.mlflow_server import MlflowServer
from tests.silent_peer import silent_peer

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": 5,
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 1,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 0,
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": 0.0,
}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One real tracking server for the module; a test may stop and restart it."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tracking_server(settings, mlflow_server, monkeypatch):
    """Point the platform at the running server, a fresh experiment, short limits."""
    if mlflow_server.proc is None:
        mlflow_server.start()
    settings.MLFLOW_TRACKING_URI = mlflow_server.url
    settings.MLFLOW_EXPERIMENT = f"outbox-{uuid.uuid4().hex[:8]}"
    for name, value in HTTP_LIMITS.items():
        setattr(settings, name, value)
        # tracking.client() writes these for MLflow; undone after the test so
        # that no child process of a later test inherits them.
        monkeypatch.setenv(name, str(value))
    return mlflow_server


def _experiment_runs(server: MlflowServer, experiment: str, filter_string: str = ""):
    mlflow_client = MlflowClient(tracking_uri=server.url)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow_client.search_runs([found.experiment_id], filter_string)


def _record(run_id: int) -> tracking.EvaluationRecord:
    return tracking.EvaluationRecord(
        run_name=f"run {run_id}",
        tags={tracking.RUN_ID_TAG: str(run_id)},
        params={"suite": "small@1.0.0"},
        metrics={"perplexity.perplexity": 12.5},
        json_artifacts={"results.json": {"ok": True}},
    )


@pytest.mark.django_db(transaction=True)
def test_e12_mlflow_down_run_succeeds_and_the_outbox_delivers_when_it_is_back(
    released_lm_version, small_suite, member_a, tracking_server
):
    tracking_server.stop()  # MLflow down during and after the evaluation
    env = process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=tracking_server.url,
        MLFLOW_EXPERIMENT=settings.MLFLOW_EXPERIMENT,
        MLFLOW_OUTBOX_BACKOFF_SECONDS="1",
        **{name: str(value) for name, value in HTTP_LIMITS.items()},
    )
    with celery_worker(env, worker_queues()):
        run = evaluation_services.evaluation_request(
            actor=member_a, model_version=released_lm_version, suite=small_suite
        )
        run = wait_until(
            lambda: EvaluationRun.objects.filter(
                pk=run.pk, status__in=evaluation_services.FINISHED
            ).first(),
            timeout=240,
            interval=0.5,
            what="the evaluation",
        )
        assert run.status == RunStatus.SUCCEEDED, run.failure_reason
        assert run.metrics.filter(task="perplexity", name="perplexity").exists()
        assert run.mlflow_run_id == ""
        key = outbox.evaluation_outbox_key(run.pk)
        # The delivery queued on commit tried, failed, and waits its backoff.
        failed = wait_until(
            lambda: (
                OutboxMessage.objects.filter(dedupe_key=key, attempts__gte=1)
                .exclude(last_error="")
                .first()
            ),
            timeout=60,
            what="a failed delivery attempt",
        )
        assert failed.delivered_at is None
        assert outbox.outbox_backlog() == {"undelivered": 1, "failing": 1}

        tracking_server.start()
        from config.celery import app

        def delivered():
            app.send_task("civitas.mlflow_outbox_deliver")
            time.sleep(1)
            return EvaluationRun.objects.get(pk=run.pk).mlflow_run_id

        mlflow_run_id = wait_until(delivered, timeout=90, what="the delivery")

    logged = MlflowClient(tracking_uri=tracking_server.url).get_run(mlflow_run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.tags[tracking.RUN_ID_TAG] == str(run.pk)
    stored = {f"{m.task}.{m.name}": m.value for m in run.metrics.all()}
    assert logged.data.metrics == pytest.approx(stored)
    artifacts = MlflowClient(tracking_uri=tracking_server.url).list_artifacts(
        mlflow_run_id
    )
    assert "items.jsonl" in {entry.path for entry in artifacts}
    assert outbox.outbox_backlog() == {"undelivered": 0, "failing": 0}
    assert (
        AuditEvent.objects.filter(
            action="evaluation.tracked", object_id=str(run.pk)
        ).count()
        == 1
    )


def test_a_message_delivered_twice_makes_one_mlflow_run(tracking_server):
    key = "evaluation_run:test-twice"
    with transaction.atomic():
        message = outbox.outbox_enqueue(
            kind=OutboxKind.EVALUATION_RUN,
            dedupe_key=key,
            payload={"evaluation_run_id": 0, "record": _record(0).to_json()},
        )
        again = outbox.outbox_enqueue(
            kind=OutboxKind.EVALUATION_RUN, dedupe_key=key, payload={}
        )
    assert again.pk == message.pk  # the same debt is written once

    assert outbox.outbox_deliver() == {"delivered": 1, "failed": 0}
    first = OutboxMessage.objects.get(pk=message.pk)
    # A worker killed after MLflow answered but before the row was marked:
    # its lease has run out, so another delivery takes the message again.
    OutboxMessage.objects.filter(pk=message.pk).update(
        delivered_at=None, next_attempt_at=timezone.now()
    )
    assert outbox.outbox_deliver() == {"delivered": 1, "failed": 0}

    runs = _experiment_runs(
        tracking_server,
        settings.MLFLOW_EXPERIMENT,
        f"tags.`{tracking.OUTBOX_KEY_TAG}` = '{key}'",
    )
    assert [run.info.run_id for run in runs] == [first.remote_id]
    assert OutboxMessage.objects.get(pk=message.pk).remote_id == first.remote_id
    assert runs[0].data.metrics == {"perplexity.perplexity": 12.5}


def test_e11_a_delivery_attempt_against_a_silent_peer_returns_within_its_bound(
    tracking_server, settings
):
    with transaction.atomic():
        message = outbox.outbox_enqueue(
            kind=OutboxKind.EVALUATION_RUN,
            dedupe_key="evaluation_run:test-silent",
            payload={"evaluation_run_id": 0, "record": _record(0).to_json()},
        )
    with silent_peer() as (host, port):
        settings.MLFLOW_TRACKING_URI = f"http://{host}:{port}"
        started = time.monotonic()
        counts = outbox.outbox_deliver()
        elapsed = time.monotonic() - started

    # One call: timeout x (1 + retries) = 10 s; generous slack for a busy host.
    assert elapsed < 10 + 10
    assert counts == {"delivered": 0, "failed": 1}
    message.refresh_from_db()
    assert message.delivered_at is None and message.attempts == 1
    assert "timeout" in message.last_error.lower()
    assert outbox.outbox_backlog() == {"undelivered": 1, "failing": 1}
    # Backed off: not due again at once.
    assert outbox.outbox_deliver() == {"delivered": 0, "failed": 0}


def test_e11_the_mlflow_health_check_holds_its_budget_against_a_silent_peer(
    settings, client
):
    settings.HEALTHCHECK_TIMEOUT_SECONDS = 1.0
    with silent_peer() as (host, port):
        settings.MLFLOW_TRACKING_URI = f"http://{host}:{port}"
        started = time.monotonic()
        response = client.get("/healthz")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert "mlflow" in body["down"]
    # The MLflow part within its budget, with slack for a busy host; the
    # whole page (database and broker too) within a few budgets.
    assert body["checks"]["mlflow"]["ms"] < (1.0 + 3) * 1000
    assert elapsed < 1.0 + 10


def test_the_health_check_reports_an_mlflow_that_refuses_our_host_as_down(
    tracking_server, settings, client
):
    assert client.get("/healthz").json()["checks"]["mlflow"]["ok"] is True
    # Same server, another Host header: /health still answers, the API says 403.
    settings.MLFLOW_TRACKING_URI = f"http://localhost:{tracking_server.port}"

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["down"] == ["mlflow"]


def test_mlflow_sync_check_reports_drift_both_ways_and_repairs_what_is_missing(
    tracking_server, released_lm_version, small_suite, make_run
):
    kept = make_run(released_lm_version, small_suite, metrics={"perplexity.p": 2.0})
    lost = make_run(released_lm_version, small_suite, metrics={"perplexity.p": 3.0})
    changed = make_run(released_lm_version, small_suite, metrics={"perplexity.p": 4.0})
    with transaction.atomic():
        for run in (kept, lost, changed):
            evaluation_services._owe_mlflow(
                run, evaluation_services.evaluation_tracking_record(run)
            )
    # The three runs, then their version's registered record listing them.
    assert outbox.outbox_deliver()["delivered"] == 4
    mlflow_client = MlflowClient(tracking_uri=tracking_server.url)
    lost.refresh_from_db()
    changed.refresh_from_db()
    mlflow_client.delete_run(lost.mlflow_run_id)  # someone cleaned MLflow up
    mlflow_client.log_metric(changed.mlflow_run_id, "perplexity.p", 9.0)
    orphan = tracking.log_evaluation(_record(987654321))

    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("mlflow_sync", "--check", stdout=out)

    assert exit_info.value.code == 1
    lines = sorted(out.getvalue().splitlines())
    assert lines == sorted(
        [
            f"missing evaluation_run={lost.pk} mlflow_run=-",
            f"metrics evaluation_run={changed.pk} mlflow_run={changed.mlflow_run_id}"
            " keys=perplexity.p",
            f"orphan evaluation_run=987654321 mlflow_run={orphan.run_id}",
        ]
    )

    call_command("mlflow_sync", stdout=StringIO())  # queues the missing run again
    assert outbox.outbox_deliver()["delivered"] == 2  # the run, then its version
    runs = _experiment_runs(
        tracking_server,
        settings.MLFLOW_EXPERIMENT,
        f"tags.`{tracking.RUN_ID_TAG}` = '{lost.pk}'",
    )
    assert len(runs) == 1 and runs[0].data.metrics == {"perplexity.p": 3.0}


def test_the_outbox_is_swept_by_beat_every_minute():
    entry = settings.CELERY_BEAT_SCHEDULE["mlflow-outbox"]
    assert entry["task"] == "civitas.mlflow_outbox_deliver"
    assert entry["schedule"].total_seconds() == 60


def test_a_finished_run_and_its_outbox_message_commit_together(
    released_lm_version,
    small_suite,
    member_a,
    settings,
    django_capture_on_commit_callbacks,
):
    run = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    # MLflow is not called while the run finishes: one that never answers
    # changes nothing.
    with (
        silent_peer() as (host, port),
        django_capture_on_commit_callbacks() as callbacks,
    ):
        settings.MLFLOW_TRACKING_URI = f"http://{host}:{port}"
        run = evaluation_services.evaluation_execute(run_id=run.pk)

    assert run.status == RunStatus.SUCCEEDED, run.failure_reason
    message = OutboxMessage.objects.get(dedupe_key=outbox.evaluation_outbox_key(run.pk))
    assert message.payload["record"]["metrics"] == {
        f"{m.task}.{m.name}": m.value for m in run.metrics.all()
    }
    assert message.payload["record"]["stored_artifacts"] == {
        "items.jsonl": run.items_key
    }
    assert len(callbacks) >= 1  # the delivery is queued on commit


def test_oversight_reads_the_outbox_in_the_admin_and_cannot_change_it(
    client, platform_admin, rf
):
    from django.contrib import admin

    with transaction.atomic():
        outbox.outbox_enqueue(
            kind=OutboxKind.EVALUATION_RUN,
            dedupe_key="evaluation_run:test-admin",
            payload={"evaluation_run_id": 0, "record": _record(0).to_json()},
        )
    client.force_login(platform_admin)

    page = client.get("/admin/governance/outboxmessage/")

    assert page.status_code == 200
    assert "evaluation_run:test-admin" in page.content.decode()
    request = rf.get("/admin/")
    request.user = platform_admin
    model_admin = admin.site._registry[OutboxMessage]
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
