"""The agency dashboard: the agency's own figures, oversight's across agencies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from governance.models import Decision, EvaluationRun, RunStatus
from governance.services import evaluations as evaluation_services
from registry.models import VersionStatus
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_is_sent_to_sign_in(client):
    for path in ("/portal/", "/portal/dashboard/runs/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_an_account_without_agency_is_told_so(db):
    page = client_of(UserFactory(username="nobody")).get("/portal/")
    assert page.status_code == 200
    assert "does not belong to an agency" in page.content.decode()


def test_c1_models_by_status_count_only_the_agencys_own(member_a, member_b):
    own = ModelVersionFactory(model__agency=member_a.membership.agency)
    ModelVersionFactory(model=own.model, status=VersionStatus.APPROVED)
    ModelVersionFactory(model__agency=member_b.membership.agency)

    page = client_of(member_a).get("/portal/")

    assert [m.pk for m in page.context["models"]] == [own.model_id]
    model = page.context["models"][0]
    assert (model.n_draft, model.n_approved) == (1, 1)
    assert page.context["version_totals"]["draft"] == 1
    assert page.context["version_totals"]["approved"] == 1


def test_runs_in_progress_panel_polls_and_shows_progress(
    member_a, member_b, released_lm_version, small_suite
):
    run = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    EvaluationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, progress=0.25, progress_note="perplexity 1 of 4"
    )
    page = client_of(member_a).get("/portal/").content.decode()
    assert 'hx-get="/portal/dashboard/runs/"' in page
    fragment = client_of(member_a).get("/portal/dashboard/runs/").content.decode()
    assert f"/portal/evaluations/{run.pk}/" in fragment
    assert 'value="25"' in fragment and "perplexity 1 of 4" in fragment
    # Another agency's panel stays empty.
    other = client_of(member_b).get("/portal/dashboard/runs/").content.decode()
    assert f"/portal/evaluations/{run.pk}/" not in other


def test_policy_failures_and_expiring_approvals_are_listed(
    kit, member_b, reviewer, settings
):
    settings.CIVITAS_APPROVAL_DAYS = 10  # the approval ends within the window
    kit.approved()
    approval = Decision.objects.get(use_case=kit.use_case, kind="approve")
    assert approval.expires_at < timezone.now() + timedelta(days=11)
    # A newer run that fails the baseline policy's threshold: the re-check fails.
    from governance.services.policies import policy_evaluate

    kit.run(acc=0.1, days_ago=0)
    policy_evaluate(use_case=kit.use_case, trigger="on_demand", actor=kit.requester)

    page = client_of(kit.requester).get("/portal/")
    assert [f["result"].use_case_id for f in page.context["failures"]] == [
        kit.use_case.pk
    ]
    assert page.context["failures"][0]["failed"][0]["rule_id"] == "mc-acc"
    assert [u.pk for u in page.context["expiring"]] == [kit.use_case.pk]
    html = page.content.decode()
    assert kit.use_case.title in html

    assert client_of(member_b).get("/portal/").context["failures"] == []
    oversight = client_of(reviewer).get("/portal/")
    assert oversight.context["oversight"] is True
    assert [u.pk for u in oversight.context["expiring"]] == [kit.use_case.pk]
    assert "awaiting" in oversight.context


def test_an_approval_far_from_its_end_is_not_listed(kit, settings):
    settings.CIVITAS_APPROVAL_DAYS = 200
    kit.approved()
    page = client_of(kit.requester).get("/portal/")
    assert page.context["expiring"] == []


def _catalogue(member, suite, n: int) -> None:
    agency = member.membership.agency
    for _ in range(n):
        version = ModelVersionFactory(
            model__agency=agency,
            artifact_state="available",
            artifact_digest="d" * 64,
            kind="causal_lm",
        )
        run = evaluation_services.evaluation_request(
            actor=member, model_version=version, suite=suite, enqueue=False
        )
        EvaluationRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)


@pytest.mark.parametrize("size", [2, 20])
def test_dashboard_issues_a_constant_number_of_queries(
    member_a, small_suite, django_assert_max_num_queries, size
):
    _catalogue(member_a, small_suite, size)
    client = client_of(member_a)
    client.get("/portal/")
    with django_assert_max_num_queries(10):
        response = client.get("/portal/")
    assert len(response.context["runs"]) == min(size, 10)
    with django_assert_max_num_queries(6):
        client.get("/portal/dashboard/runs/")


def test_open_incident_reports_reach_the_owning_agency_and_oversight_only(
    publish, member_a, member_b, reviewer
):
    from governance.models import IncidentStatus
    from governance.services.incidents import incident_report_file

    entry = publish(title="Answering waste questions")
    report = incident_report_file(
        use_case=entry,
        what_happened="The assistant gave the wrong opening hours.",
        occurred_on=timezone.localdate(),
        contact_email="",
    )
    own = client_of(member_a).get("/portal/")
    assert [r.pk for r in own.context["incidents"]] == [report.pk]
    assert "Answering waste questions" in own.content.decode()
    assert "/portal/incidents/" not in own.content.decode()  # triage is oversight's
    oversight = client_of(reviewer).get("/portal/")
    assert [r.pk for r in oversight.context["incidents"]] == [report.pk]
    assert f"/portal/incidents/{report.pk}/" in oversight.content.decode()
    assert client_of(member_b).get("/portal/").context["incidents"] == []
    type(report).objects.filter(pk=report.pk).update(status=IncidentStatus.DISMISSED)
    assert client_of(member_a).get("/portal/").context["incidents"] == []
