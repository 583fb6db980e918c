"""The reviewers' pages: who may open them, the evidence, and the decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import Decision, UseCase, UseCaseStatus, Waiver
from governance.risk import load_definition
from registry.models import ModelVersionDataset
from tests.factories import DatasetVersionFactory, ModelVersionFactory
from tests.governance.conftest import JUSTIFICATION, RATIONALE

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

S = UseCaseStatus
QUEUE = "/portal/review/"
MIGRATION = next(
    answer["text"]
    for question in load_definition("aia-1.json")["questions"]
    if question["id"] == "areas"
    for answer in question["answers"]
    if answer["id"] == "migration"
)
USE_CASES = "/portal/use-cases/"


def _review(use_case) -> str:
    return f"/portal/review/{use_case.pk}/"


def _signed_in(client, user):
    client.force_login(user)
    return client


# --- who may open the pages ----------------------------------------------------


def test_anonymous_readers_are_sent_to_sign_in(client, kit):
    for url in (QUEUE, USE_CASES, _review(kit.use_case)):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith("/accounts/login/?next=")


@pytest.mark.parametrize("who", ["member_a", "maintainer_a", "member_b"])
def test_c1_agency_staff_get_403_on_every_reviewer_page(client, kit, who, request):
    _signed_in(client, request.getfixturevalue(who))
    for url in (QUEUE, USE_CASES, _review(kit.use_case)):
        assert client.get(url).status_code == 403
    response = client.post(
        _review(kit.use_case), {"action": "approve", "rationale": RATIONALE}
    )
    assert response.status_code == 403
    assert not Decision.objects.exists()


def test_a_missing_use_case_is_404(client, reviewer, kit):
    _signed_in(client, reviewer)
    assert client.get("/portal/review/999999/").status_code == 404


# --- the queue and the list -------------------------------------------------------


def test_queue_lists_submitted_and_in_review_cases_only(client, kit, reviewer):
    kit.assess()
    kit.run()
    kit.submit()
    _signed_in(client, reviewer)
    page = client.get(QUEUE).content.decode()
    assert kit.use_case.title in page
    assert "Submitted" in page and "Passed" in page
    other = UseCase.objects.create(
        agency=kit.use_case.agency,
        model_version=kit.use_case.model_version,
        title="A draft nobody submitted",
        purpose="x",
        public_service="y",
        valid_until=timezone.localdate() + timedelta(days=30),
        created_by=kit.requester,
    )
    page = client.get(QUEUE).content.decode()
    assert other.title not in page


def _many(kit, count: int, status=S.SUBMITTED) -> None:
    """``count`` use cases of fresh versions (test set-up, rows built directly)."""
    for n in range(count):
        version = ModelVersionFactory(model__agency=kit.use_case.agency)
        UseCase.objects.create(
            agency=kit.use_case.agency,
            model_version=version,
            title=f"Use case {n}",
            purpose="Answer questions.",
            public_service="Front desk",
            status=status,
            valid_until=timezone.localdate() + timedelta(days=30),
            created_by=kit.requester,
        )


@pytest.mark.parametrize("url", [QUEUE, USE_CASES])
def test_lists_issue_a_constant_number_of_queries(
    client, kit, reviewer, django_assert_max_num_queries, url
):
    _signed_in(client, reviewer)
    _many(kit, 2)
    client.get(url)  # warm the session and the membership cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small:
        assert client.get(url).status_code == 200
    _many(kit, 18)
    with django_assert_max_num_queries(len(small)):
        response = client.get(url)
    assert response.content.decode().count("Use case 1") >= 1
    assert "Use case 17" in response.content.decode()


def test_use_cases_filter_by_agency_status_tier_and_words(
    client, kit, reviewer, agency_b
):
    kit.assess("high")
    _many(kit, 2, status=S.DRAFT)
    _signed_in(client, reviewer)
    page = client.get(USE_CASES, {"risk_tier": "high"}).content.decode()
    assert kit.use_case.title in page and "Use case 0" not in page
    page = client.get(USE_CASES, {"risk_tier": "none"}).content.decode()
    assert kit.use_case.title not in page and "Use case 0" in page
    page = client.get(USE_CASES, {"q": "waste collection"}).content.decode()
    assert kit.use_case.title in page and "Use case 1" not in page
    page = client.get(USE_CASES, {"agency": agency_b.slug}).content.decode()
    assert kit.use_case.title not in page and "No use case matches." in page
    page = client.get(USE_CASES, {"status": "draft", "agency": "region-a"})
    assert page.status_code == 200


# --- the review page: evidence ------------------------------------------------------


def test_review_page_shows_the_evidence_readably(client, kit, reviewer):
    use_case = kit.in_review("high")
    ModelVersionDataset.objects.create(
        model_version=use_case.model_version,
        dataset_version=DatasetVersionFactory(
            dataset__name="Letters 2025", personal_data="pseudonymised"
        ),
        role="training",
    )
    _signed_in(client, reviewer)
    page = client.get(_review(use_case)).content.decode()
    # Risk reasons and answers in words, never JSON.
    assert "High risk" in page
    assert "Which areas does the use touch?" in page
    assert MIGRATION in page
    assert "Does the use do any of the following?" in page
    assert "None of these" in page
    # The policy result rule by rule.
    assert "mc-acc" in page and "Required evaluation" in page
    assert '<span class="badge badge--ok">Passed</span>' in page
    # The run relied on, the history, the audit link, the form.
    assert "multiple_choice.acc" in page
    assert "Submitted → In review" in page
    assert f"/portal/audit/objects/governance.usecase/{use_case.pk}/" in page
    assert 'name="action"' in page and 'value="approve"' in page
    assert "[{" not in page and "{&quot;" not in page
    assert "Two-person approval: 0 of 2" in page
    assert "Letters 2025" in page
    assert "<td>Training</td>" in page and "<td>Pseudonymised</td>" in page
    assert 'id="duties"' not in page  # nothing stands in Rita's way


def test_review_page_queries_do_not_grow_with_the_catalogue(
    client, kit, reviewer, django_assert_max_num_queries
):
    use_case = kit.in_review()
    _signed_in(client, reviewer)
    _many(kit, 2)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(_review(use_case))
    with CaptureQueriesContext(connection) as small:
        client.get(_review(use_case))
    _many(kit, 18)
    for _ in range(3):
        kit.run()
    with django_assert_max_num_queries(len(small)):
        assert client.get(_review(use_case)).status_code == 200


# --- decisions ---------------------------------------------------------------------


def test_reviewer_starts_the_review_then_approves(client, kit, reviewer):
    kit.assess()
    kit.run()
    kit.submit()
    _signed_in(client, reviewer)
    response = client.post(_review(kit.use_case), {"action": "start_review"})
    assert response.status_code == 302
    assert kit.refresh().status == S.IN_REVIEW
    assert AuditEvent.objects.filter(action="use_case.review_started").exists()
    response = client.post(
        _review(kit.use_case), {"action": "approve", "rationale": RATIONALE}
    )
    assert response.status_code == 302
    assert kit.refresh().status == S.APPROVED
    decision = Decision.objects.get(use_case=kit.use_case)
    assert (decision.kind, decision.reviewer, decision.rationale) == (
        "approve",
        reviewer,
        RATIONALE,
    )
    event = AuditEvent.objects.get(action="use_case.approved")
    assert event.payload_data["decision_id"] == decision.pk
    page = client.get(response.url).content.decode()
    assert "Decision recorded: the use case is now “Approved”." in page


@pytest.mark.parametrize(
    ("action", "status"),
    [("reject", S.REJECTED), ("request_changes", S.CHANGES_REQUESTED)],
)
def test_reject_and_request_changes_call_their_services(
    client, kit, reviewer, action, status
):
    kit.in_review()
    _signed_in(client, reviewer)
    response = client.post(
        _review(kit.use_case), {"action": action, "rationale": RATIONALE}
    )
    assert response.status_code == 302
    assert kit.refresh().status == status
    assert AuditEvent.objects.filter(action=f"use_case.{status}").exists()


def test_a_decision_without_rationale_is_refused_by_the_form(client, kit, reviewer):
    kit.in_review()
    _signed_in(client, reviewer)
    response = client.post(_review(kit.use_case), {"action": "approve"})
    assert response.status_code == 400
    assert "Give the rationale of your decision." in response.content.decode()
    response = client.post(
        _review(kit.use_case), {"action": "approve", "rationale": "short"}
    )
    assert response.status_code == 400
    assert "A rationale takes 10 to 10,000 characters." in response.content.decode()
    response = client.post(
        _review(kit.use_case), {"action": "retire", "rationale": RATIONALE}
    )
    assert response.status_code == 400  # not a choice while in review
    assert kit.refresh().status == S.IN_REVIEW
    assert not Decision.objects.exists()


def test_failed_rules_are_waived_with_a_justification(client, kit, reviewer):
    kit.in_review(acc=0.3)
    _signed_in(client, reviewer)
    page = client.get(_review(kit.use_case)).content.decode()
    assert 'value="baseline/mc-acc"' in page
    response = client.post(
        _review(kit.use_case), {"action": "approve", "rationale": RATIONALE}
    )
    assert response.status_code == 403
    assert "approval needs a passing result or a waiver" in response.content.decode()
    response = client.post(
        _review(kit.use_case),
        {
            "action": "approve",
            "rationale": RATIONALE,
            "waiver_rule_ids": ["baseline/mc-acc"],
            "waiver_justification": JUSTIFICATION,
        },
    )
    assert response.status_code == 302
    assert kit.refresh().status == S.APPROVED
    waiver = Waiver.objects.get(use_case=kit.use_case)
    assert waiver.rule_ids == ["baseline/mc-acc"]
    page = client.get(_review(kit.use_case)).content.decode()
    assert "Waived: baseline/mc-acc" in page and JUSTIFICATION[:40] in page


# --- separation of duties ------------------------------------------------------------


def test_second_approval_by_the_first_approver_is_explained_and_refused(
    client, kit, reviewer, second_reviewer
):
    kit.in_review("high")
    _signed_in(client, reviewer)
    response = client.post(
        _review(kit.use_case), {"action": "approve", "rationale": RATIONALE}
    )
    assert response.status_code == 302
    assert kit.refresh().status == S.IN_REVIEW
    assert AuditEvent.objects.filter(action="use_case.approval_recorded").exists()
    page = client.get(response.url).content.decode()
    assert "Your approval is recorded." in page
    assert "Two-person approval: 1 of 2" in page
    assert "First approval by rita" in page
    assert "Waiting for the second approval, by another reviewer." in page
    # Before trying: the page names the rule and says why.
    assert 'id="duties"' in page
    assert "A high-risk use needs two different reviewers" in page
    assert "four_eyes_second_reviewer" in page
    assert "You already gave the first approval in this review round" in page
    # Trying anyway: the service refuses, and the refusal reads as words.
    response = client.post(
        _review(kit.use_case), {"action": "approve", "rationale": RATIONALE}
    )
    assert response.status_code == 403
    page = response.content.decode()
    assert 'role="alert"' in page
    assert "The decision was not recorded" in page
    assert "Refused by the rule: A high-risk use needs two different reviewers." in page
    assert Decision.objects.count() == 1
    # Another reviewer completes it.
    client.force_login(second_reviewer)
    page = client.get(_review(kit.use_case)).content.decode()
    assert 'id="duties"' not in page
    response = client.post(
        _review(kit.use_case), {"action": "approve", "rationale": RATIONALE}
    )
    assert response.status_code == 302
    assert kit.refresh().status == S.APPROVED


def test_platform_administrators_see_why_they_do_not_decide(
    client, kit, platform_admin
):
    kit.in_review()
    _signed_in(client, platform_admin)
    page = client.get(_review(kit.use_case)).content.decode()
    assert "Only reviewers decide" in page
    assert "administrators operate the platform" in page
    response = client.post(
        _review(kit.use_case), {"action": "reject", "rationale": RATIONALE}
    )
    assert response.status_code == 403
    assert "Refused by the rule: Only reviewers decide." in response.content.decode()
    assert kit.refresh().status == S.IN_REVIEW


def test_a_reviewer_who_requested_the_evidence_is_told_before_approving(
    client, kit, reviewer, second_reviewer
):
    kit.assess()
    kit.run(requested_by=second_reviewer)
    kit.submit()
    _signed_in(client, reviewer)
    client.post(_review(kit.use_case), {"action": "start_review"})
    client.force_login(second_reviewer)
    page = client.get(_review(kit.use_case)).content.decode()
    assert "Whoever requested the evidence does not approve it" in page
    response = client.post(
        _review(kit.use_case), {"action": "approve", "rationale": RATIONALE}
    )
    assert response.status_code == 403
    assert "four_eyes_evaluation_requester" in response.content.decode()
    assert kit.refresh().status == S.IN_REVIEW
