"""Evaluations end to end: API → Celery worker over Redis → ONNX Runtime → MLflow."""

from __future__ import annotations

import pytest
from django.conf import settings

from governance import tracking
from governance.models import EvaluationRun, RunStatus
from governance.services import evaluations as evaluation_services
from governance.services import outbox
from tests.conftest import (
    celery_worker,
    database_url,
    process_env,
    wait_until,
    worker_queues,
)
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_evaluation_runs_through_api_worker_and_mlflow(
    released_lm_version, small_suite, member_a, mlflow_store
):
    api = token_client(member_a)
    env = process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
        MLFLOW_EXPERIMENT=settings.MLFLOW_EXPERIMENT,
    )

    with celery_worker(env, worker_queues()):
        response = api.post(
            f"/api/v1/model-versions/{released_lm_version.pk}/evaluations/",
            {"suite": "small"},
            format="json",
        )
        assert response.status_code == 202, response.content
        run_id = response.json()["id"]

        def finished():
            body = api.get(f"/api/v1/evaluations/{run_id}/").json()
            # MLflow's run id arrives through the outbox, just after the run.
            done = body["status"] == "failed" or body["mlflow_run_id"]
            return body if done else None

        body = wait_until(finished, timeout=240, interval=1, what="the evaluation")

    assert body["status"] == "succeeded", body["failure_reason"]
    metrics = {(m["task"], m["name"]): m["value"] for m in body["metrics"]}
    assert metrics[("perplexity", "perplexity")] > 1.0
    assert 0.0 <= metrics[("multiple_choice", "acc")] <= 1.0
    assert body["environment"]["onnxruntime"]  # the run records its environment

    summary = tracking.read_run(body["mlflow_run_id"])
    assert summary.status == "FINISHED"
    assert summary.tags["civitas.evaluation_run_id"] == str(run_id)
    assert summary.params["artifact_sha256"] == released_lm_version.artifact_digest
    assert summary.metrics["perplexity.perplexity"] == pytest.approx(
        metrics[("perplexity", "perplexity")]
    )
    assert len(summary.dataset_digests) == 2
    assert "items.jsonl" in summary.artifacts

    items = api.get(f"/api/v1/evaluations/{run_id}/items/")
    assert items.status_code == 200
    lines = b"".join(items.streaming_content).decode().splitlines()
    assert len(lines) == 4  # two texts and two questions


def test_evaluation_request_queues_on_commit_only(
    released_lm_version, small_suite, member_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        run = evaluation_services.evaluation_request(
            actor=member_a, model_version=released_lm_version, suite=small_suite
        )

    assert run.status == RunStatus.QUEUED
    assert len(callbacks) == 1


def test_c1_another_agencys_member_cannot_evaluate_or_see_runs(
    released_lm_version, small_suite, member_a, member_b
):
    run = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    api_b = token_client(member_b)

    asked = api_b.post(
        f"/api/v1/model-versions/{released_lm_version.pk}/evaluations/",
        {"suite": "small"},
        format="json",
    )
    assert asked.status_code == 404
    assert api_b.get(f"/api/v1/evaluations/{run.pk}/").status_code == 404
    assert api_b.post(f"/api/v1/evaluations/{run.pk}/cancel/").status_code == 404
    assert api_b.get("/api/v1/evaluations/").json()["results"] == []


def test_anonymous_gets_401_on_evaluation_endpoints(anon, released_lm_version):
    assert anon.get("/api/v1/evaluations/").status_code == 401
    assert anon.get("/api/v1/suites/").status_code == 401
    assert (
        anon.post(
            f"/api/v1/model-versions/{released_lm_version.pk}/evaluations/"
        ).status_code
        == 401
    )


def test_a_bad_digest_ends_the_run_failed_with_the_reason(
    released_lm_version, small_suite, member_a, mlflow_store
):
    run = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    EvaluationRun.objects.filter(pk=run.pk).update(artifact_digest="0" * 64)

    run = evaluation_services.evaluation_execute(run_id=run.pk)
    outbox.outbox_deliver()  # what the task queued on commit does
    run.refresh_from_db()

    assert run.status == RunStatus.FAILED
    assert "digest_mismatch" in run.failure_reason
    assert tracking.read_run(run.mlflow_run_id).status == "FAILED"


def test_a_run_found_running_without_heartbeat_on_redelivery_runs_again(
    released_lm_version, small_suite, member_a, mlflow_store
):
    run = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    # The first delivery claimed it, then its worker died (acks_late redelivers)
    # without a single heartbeat: the run is lost, and is run again once.
    EvaluationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, attempts=1, worker="elsewhere:1"
    )

    again = evaluation_services.evaluation_execute(run_id=run.pk)

    again.refresh_from_db()
    assert again.status == RunStatus.SUCCEEDED
    assert again.attempts == 2


def test_e8_a_finished_run_is_never_run_again(
    released_lm_version, small_suite, member_a
):
    run = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    EvaluationRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)

    evaluation_services.evaluation_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.attempts == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_e1_a_pool_child_killed_mid_run_is_redelivered_and_completes_once(
    released_lm_version, member_a, mlflow_store
):
    """SIGKILL the pool child during a run: the redelivered message runs it again."""
    import psutil

    from governance.models import EvaluationSuite
    from tests.factories import DatasetVersionFactory, LicenceFactory
    from tests.governance.conftest import _jsonl, _stored

    prompts = _jsonl(
        [
            {"prompt": f"Tell me about service {n}.", "should_refuse": n % 2 == 0}
            for n in range(400)
        ]
    )
    key, digest = _stored("tests/long-refusal.jsonl", prompts)
    suite = EvaluationSuite.objects.create(
        name="long",
        version="1.0.0",
        licence=LicenceFactory(expression="CC0-1.0"),
        tasks=[
            {
                "task": "refusal",
                "name": "refusal",
                "options": {"max_new_tokens": 48},
                "dataset_version": DatasetVersionFactory(
                    storage_key=key, digest=digest
                ).pk,
            }
        ],
    )
    env = process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
    )
    with celery_worker(env, settings.CELERY_TASK_DEFAULT_QUEUE) as worker:
        run = evaluation_services.evaluation_request(
            actor=member_a, model_version=released_lm_version, suite=suite
        )
        wait_until(
            lambda: EvaluationRun.objects.get(pk=run.pk).status == RunStatus.RUNNING,
            timeout=120,
            what="the run to start",
        )
        pool_child = psutil.Process(worker.pid).children()[0]
        engine_children = pool_child.children(recursive=True)
        pool_child.kill()

        def settled():
            return EvaluationRun.objects.filter(
                pk=run.pk, status__in=evaluation_services.FINISHED
            ).first()

        final = wait_until(settled, timeout=600, what="the run to settle")

    assert final.status == RunStatus.SUCCEEDED, final.failure_reason
    assert final.attempts == 2
    assert final.metrics.filter(task="refusal").exists()
    # The engine child died with its parent instead of running on as an orphan.
    psutil.wait_procs(engine_children, timeout=10)
    assert not any(child.is_running() for child in engine_children)


def test_evaluate_command_runs_one_evaluation_in_the_foreground(
    released_lm_version, small_suite, platform_admin, mlflow_store
):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("evaluate", str(released_lm_version.pk), suite="small", stdout=out)

    run = EvaluationRun.objects.get(model_version=released_lm_version)
    assert run.status == RunStatus.SUCCEEDED
    assert run.requested_by == platform_admin
    assert f"run {run.pk} succeeded" in out.getvalue()
    assert run.metrics.filter(task="multiple_choice", name="acc").exists()
    # The command delivers what MLflow is owed before it names the MLflow run.
    assert run.mlflow_run_id and f"(MLflow run {run.mlflow_run_id})" in out.getvalue()


def test_e4_sweeper_fails_runs_without_heartbeat_and_requeues_lost_messages(
    released_lm_version,
    small_suite,
    member_a,
    settings,
    django_capture_on_commit_callbacks,
):
    from datetime import timedelta

    from django.utils import timezone

    stale = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    lost = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    long_ago = timezone.now() - timedelta(hours=2)
    # A stale run that already used its attempts is failed; one with attempts
    # left is queued again (tests/governance/test_redelivery.py).
    EvaluationRun.objects.filter(pk=stale.pk).update(
        status=RunStatus.RUNNING,
        heartbeat_at=long_ago,
        worker="elsewhere:1",
        attempts=settings.CIVITAS_EVAL_MAX_ATTEMPTS,
    )
    EvaluationRun.objects.filter(pk=lost.pk).update(requested_at=long_ago)

    with django_capture_on_commit_callbacks() as callbacks:
        outcome = evaluation_services.evaluation_sweep()

    assert outcome == {"requeued": 1, "failed": 1}
    assert len(callbacks) == 1
    stale.refresh_from_db()
    assert stale.status == RunStatus.FAILED
    assert stale.failure_code == "worker_lost"


@pytest.mark.parametrize("spin", [False, True])
def test_the_engine_threads_spin_within_runs_only_when_configured(
    released_lm_version, small_suite, member_a, mlflow_store, settings, spin
):
    settings.CIVITAS_EVAL_SPIN_IN_RUNS = spin
    run = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )

    run = evaluation_services.evaluation_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.failure_reason
    # The child's sessions were built with the setting, and the run says so.
    assert run.environment["runtime_settings"]["spin_within_runs"] is spin
    assert run.environment["runtime_settings"]["allow_spinning"] is False
