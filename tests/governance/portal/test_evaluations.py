"""The evaluation pages: request a run, follow it, read its results, list runs."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditEvent
from governance.models import EvaluationRun, EvaluationSuite, RunStatus
from governance.services import evaluations as evaluation_services
from registry.models import ArtifactState, ModelKind, Visibility
from tests.factories import LicenceFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def version(member_a):
    """A released causal LM of agency A with a verified (synthetic) artifact."""
    return ModelVersionFactory(
        model__agency=member_a.membership.agency,
        model__name="Reply drafter",
        artifact_state=ArtifactState.AVAILABLE,
        artifact_digest="b" * 64,
        artifact_format="zip",
        kind=ModelKind.CAUSAL_LM_KV,
    )


@pytest.fixture
def suite(db):
    return EvaluationSuite.objects.create(
        name="tiny",
        version="1.0.0",
        licence=LicenceFactory(expression="CC0-1.0"),
        tasks=[{"task": "perplexity", "name": "perplexity", "dataset_version": 1}],
        thresholds={"perplexity.perplexity": {"max": 50}},
    )


def test_anonymous_is_sent_to_sign_in(client, version):
    for path in (
        f"/portal/versions/{version.pk}/evaluate/",
        "/portal/evaluations/",
        "/portal/evaluations/1/",
        "/portal/evaluations/1/live/",
    ):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/accounts/login/?next=")


def test_request_page_lists_fitting_suites_and_queues_a_run_on_commit(
    member_a, version, suite, django_capture_on_commit_callbacks
):
    classifier_only = EvaluationSuite.objects.create(
        name="routing",
        version="1.0.0",
        licence=suite.licence,
        tasks=[{"task": "classification", "name": "c", "dataset_version": 1}],
    )
    client = client_of(member_a)
    page = client.get(f"/portal/versions/{version.pk}/evaluate/")
    assert page.status_code == 200
    choices = list(page.context["form"].fields["suite"].queryset)
    assert suite in choices and classifier_only not in choices

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            f"/portal/versions/{version.pk}/evaluate/", {"suite": suite.pk}
        )

    run = EvaluationRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/portal/evaluations/{run.pk}/"
    assert (run.status, run.requested_by, run.suite) == (
        RunStatus.QUEUED,
        member_a,
        suite,
    )
    assert len(callbacks) == 1  # the Celery task, queued on commit
    assert AuditEvent.objects.filter(
        action="evaluation.requested", object_id=str(run.pk)
    ).exists()


def test_request_without_a_suite_or_a_verified_artifact_says_why(
    member_a, version, suite
):
    client = client_of(member_a)
    empty = client.post(f"/portal/versions/{version.pk}/evaluate/", {})
    assert empty.status_code == 200
    assert empty.context["form"].errors["suite"]

    version.artifact_state = ArtifactState.PENDING
    version.save()
    refused = client.post(
        f"/portal/versions/{version.pk}/evaluate/", {"suite": suite.pk}
    )
    assert refused.status_code == 200
    assert "no verified artifact" in " ".join(
        refused.context["form"].non_field_errors()
    )
    assert not EvaluationRun.objects.exists()


def test_c1_another_agency_gets_404_and_a_public_versions_reader_403(
    member_a, member_b, version, suite
):
    run = evaluation_services.evaluation_request(
        actor=member_a, model_version=version, suite=suite, enqueue=False
    )
    other = client_of(member_b)
    assert other.get(f"/portal/versions/{version.pk}/evaluate/").status_code == 404
    assert (
        other.post(
            f"/portal/versions/{version.pk}/evaluate/", {"suite": suite.pk}
        ).status_code
        == 404
    )
    assert other.get(f"/portal/evaluations/{run.pk}/").status_code == 404
    assert other.get(f"/portal/evaluations/{run.pk}/live/").status_code == 404
    assert other.post(f"/portal/evaluations/{run.pk}/cancel/").status_code == 404
    assert run not in other.get("/portal/evaluations/").context["page"].object_list

    version.model.visibility = Visibility.PUBLIC
    version.model.save()
    # A public version is readable, but only its agency (or oversight) evaluates it.
    assert other.get(f"/portal/versions/{version.pk}/evaluate/").status_code == 403
    assert other.post(f"/portal/evaluations/{run.pk}/cancel/").status_code == 403
    assert EvaluationRun.objects.count() == 1


def test_reviewer_may_request_an_evaluation_of_any_agency(reviewer, version, suite):
    response = client_of(reviewer).post(
        f"/portal/versions/{version.pk}/evaluate/", {"suite": suite.pk}
    )
    assert response.status_code == 302
    assert EvaluationRun.objects.get().requested_by == reviewer


def test_run_page_polls_while_running_and_stops_once_done(
    member_a, version, suite, make_run
):
    run = evaluation_services.evaluation_request(
        actor=member_a, model_version=version, suite=suite, enqueue=False
    )
    EvaluationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, progress=0.4, progress_note="perplexity: 2 of 5"
    )
    client = client_of(member_a)
    page = client.get(f"/portal/evaluations/{run.pk}/").content.decode()
    assert f'hx-get="/portal/evaluations/{run.pk}/live/"' in page
    assert 'value="40"' in page and "perplexity: 2 of 5" in page

    EvaluationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED,
        failure_code="timeout",
        failure_reason="the child ran past 600 s",
    )
    live = client.get(f"/portal/evaluations/{run.pk}/live/").content.decode()
    assert "hx-trigger" not in live
    assert "ran past its time limit" in live and "the child ran past 600 s" in live


def test_finished_run_shows_metrics_table_chart_and_performance(
    member_a, version, suite, settings
):
    settings.MLFLOW_TRACKING_URI = "http://mlflow.example.gov:5000"
    run = evaluation_services.evaluation_request(
        actor=member_a, model_version=version, suite=suite, enqueue=False
    )
    EvaluationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED,
        progress=1.0,
        mlflow_run_id="abc123",
        wall_seconds=2.5,
        results=[
            {
                "task": "perplexity",
                "name": "perplexity",
                "metrics": {"perplexity": 42.5, "tokens_per_s": 900.0},
                "performance": {
                    "tokens": 1000,
                    "wall_s": 2.0,
                    "energy_j": 3.0,
                    "energy_method": "estimate_cpu_time",
                    "peak_rss_bytes": 200 * 2**20,
                },
                "thresholds": [
                    {
                        "metric": "perplexity.perplexity",
                        "max": 50,
                        "value": 42.5,
                        "passed": True,
                    }
                ],
            }
        ],
    )
    page = client_of(member_a).get(f"/portal/evaluations/{run.pk}/")
    html = page.content.decode()
    tasks = page.context["tasks"]
    # Speed figures are not quality metrics: the table lists perplexity only.
    assert [m["name"] for m in tasks[0]["metrics"]] == ["perplexity"]
    assert '<svg role="img"' in html and ">42.5<" in html
    assert page.context["performance"]["tokens_per_s"] == pytest.approx(500.0)
    assert page.context["performance"]["energy_j_per_1k_tokens"] == pytest.approx(3.0)
    assert page.context["performance"]["peak_rss_mb"] == pytest.approx(200.0)
    assert 'href="http://mlflow.example.gov:5000/#/runs/abc123"' in html
    assert "hx-trigger" not in html.split('id="run-live"')[1].split(">")[0]


def test_cancel_stops_a_queued_run_and_is_audited(member_a, version, suite):
    run = evaluation_services.evaluation_request(
        actor=member_a, model_version=version, suite=suite, enqueue=False
    )
    response = client_of(member_a).post(f"/portal/evaluations/{run.pk}/cancel/")
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert AuditEvent.objects.filter(action="evaluation.cancelled").exists()
    again = client_of(member_a).post(
        f"/portal/evaluations/{run.pk}/cancel/", follow=True
    )
    assert "already cancelled" in again.content.decode()


def test_list_filters_by_status_and_suite(member_a, version, suite, make_run):
    done = make_run(version, suite)
    queued = evaluation_services.evaluation_request(
        actor=member_a, model_version=version, suite=suite, enqueue=False
    )
    client = client_of(member_a)
    everything = client.get("/portal/evaluations/").context["page"].object_list
    assert {done, queued} == set(everything)
    only_queued = client.get("/portal/evaluations/?status=queued")
    assert list(only_queued.context["page"].object_list) == [queued]
    assert (
        not client.get("/portal/evaluations/?model=nothing-like-it")
        .context["page"]
        .object_list
    )


def _catalogue(agency, suite, make_run, n: int) -> None:
    for _ in range(n):
        version = ModelVersionFactory(
            model__agency=agency, artifact_digest="c" * 64, kind=ModelKind.CAUSAL_LM
        )
        make_run(version, suite, metrics={"perplexity.perplexity": 10.0})


@pytest.mark.parametrize("size", [2, 20])
def test_list_issues_a_constant_number_of_queries(
    member_a, suite, make_run, django_assert_max_num_queries, size
):
    _catalogue(member_a.membership.agency, suite, make_run, size)
    client = client_of(member_a)
    client.get("/portal/evaluations/")  # session and membership warm-up
    with django_assert_max_num_queries(8):
        response = client.get("/portal/evaluations/")
    assert len(response.context["page"].object_list) == size
