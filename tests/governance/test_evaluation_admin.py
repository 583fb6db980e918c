"""Evaluation runs in the admin and their progress as the API shows it."""

from __future__ import annotations

import pytest

from governance.models import EvaluationRun, RunStatus
from governance.services import evaluations as evaluation_services
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db


def test_admin_rerun_asks_for_a_new_evaluation_through_the_service(
    client,
    platform_admin,
    released_lm_version,
    small_suite,
    member_a,
    django_capture_on_commit_callbacks,
):
    first = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    client.force_login(platform_admin)

    with django_capture_on_commit_callbacks() as queued:
        response = client.post(
            "/admin/governance/evaluationrun/",
            {"action": "rerun", "_selected_action": [first.pk]},
            follow=True,
        )

    assert response.status_code == 200
    runs = EvaluationRun.objects.filter(model_version=released_lm_version)
    assert runs.count() == 2
    second = runs.exclude(pk=first.pk).get()
    assert second.status == RunStatus.QUEUED
    assert second.requested_by == platform_admin
    assert len(queued) == 1


@pytest.mark.django_db(transaction=True)
def test_progress_is_written_while_a_run_works_and_read_through_the_api(
    released_lm_version, small_suite, member_a, mlflow_store
):
    run = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    seen: list[tuple[float, str, str]] = []

    def watch(event):
        current = EvaluationRun.objects.get(pk=run.pk)
        seen.append((current.progress, current.progress_note, current.status))

    evaluation_services.evaluation_execute(run_id=run.pk, progress=watch)

    assert seen, "the engine reported no progress"
    assert all(status == RunStatus.RUNNING for _, _, status in seen)
    notes = {note for _, note, _ in seen if note}
    assert notes <= {"perplexity", "multiple_choice"} and notes
    body = token_client(member_a).get(f"/api/v1/evaluations/{run.pk}/").json()
    assert body["status"] == "succeeded"
    assert body["progress"] == 1.0
