"""Separation of duties: each four-eyes conflict is refused, naming its rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from config.exceptions import PolicyViolation
from governance import selectors
from governance.models import (
    Decision,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
)
from governance.services import decisions as decision_services
from governance.services import lifecycle
from governance.services import use_cases as use_case_services
from registry.models import Membership, Role
from registry.selectors import forget_membership
from tests.factories import MembershipFactory, ModelVersionFactory, UserFactory
from tests.governance.conftest import JUSTIFICATION, RATIONALE, TIER_ANSWERS

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

S = UseCaseStatus


def _refused(call, rule: str) -> PolicyViolation:
    """Run ``call``; it must be refused by ``rule`` and leave nothing behind."""
    decisions, events = Decision.objects.count(), AuditEvent.objects.count()
    with pytest.raises(PolicyViolation) as caught:
        call()
    assert caught.value.status_code == 403
    assert caught.value.code == rule
    assert rule in caught.value.message
    assert Decision.objects.count() == decisions
    assert AuditEvent.objects.count() == events
    return caught.value


# --- only reviewers decide --------------------------------------------------------


@pytest.mark.parametrize("who", ["member_a", "maintainer_a", "member_b"])
def test_only_reviewers_decide(kit, who, request):
    use_case = kit.in_review()
    person = request.getfixturevalue(who)
    for service in (
        decision_services.use_case_approve,
        decision_services.use_case_reject,
    ):
        _refused(
            lambda service=service: service(
                actor=person, use_case=use_case, rationale=RATIONALE
            ),
            "four_eyes_reviewer_only",
        )
    assert kit.refresh().status == S.IN_REVIEW


def test_platform_administrators_operate_the_platform_and_do_not_decide(
    kit, platform_admin, reviewer
):
    kit.assess()
    kit.run()
    kit.submit()
    _refused(
        lambda: lifecycle.use_case_start_review(
            actor=platform_admin, use_case=kit.use_case
        ),
        "four_eyes_reviewer_only",
    )
    lifecycle.use_case_start_review(actor=reviewer, use_case=kit.use_case)
    error = _refused(
        lambda: decision_services.use_case_approve(
            actor=platform_admin, use_case=kit.use_case, rationale=RATIONALE
        ),
        "four_eyes_reviewer_only",
    )
    assert "administrators" in error.message


def test_approved_use_cases_are_suspended_by_reviewers_only(kit, platform_admin):
    use_case = kit.approved()
    _refused(
        lambda: decision_services.use_case_suspend(
            actor=platform_admin, use_case=use_case, rationale=RATIONALE
        ),
        "four_eyes_reviewer_only",
    )


# --- nobody decides on their own agency's use case ---------------------------------


def test_nobody_decides_on_their_own_agencys_use_case(
    oversight_body, reviewer, second_reviewer, aia_questionnaire, baseline_policy
):
    # The oversight body uses a model itself; its own reviewers may not decide.
    clerk = MembershipFactory(
        user=UserFactory(username="otto"), agency=oversight_body, role=Role.MEMBER
    ).user
    colleague = MembershipFactory(
        user=UserFactory(username="olga"), agency=oversight_body, role=Role.MAINTAINER
    ).user
    version = ModelVersionFactory(
        model__agency=oversight_body,
        artifact_state="available",
        artifact_digest="c" * 64,
        kind="causal_lm_kv",
    )
    use_case = use_case_services.use_case_create(
        actor=clerk,
        model_version=version,
        title="Summarising complaints",
        purpose="Summarise complaints for the annual report.",
        public_service="Oversight reporting",
        valid_until=timezone.localdate() + timedelta(days=200),
    )
    use_case_services.use_case_assess(
        actor=clerk, use_case=use_case, answers=TIER_ANSWERS["minimal"]
    )
    # No evaluation: the baseline rule fails, which a waiver could cover.
    lifecycle.use_case_submit(actor=colleague, use_case=use_case)

    _refused(
        lambda: lifecycle.use_case_start_review(actor=reviewer, use_case=use_case),
        "four_eyes_own_agency",
    )
    UseCase.objects.filter(pk=use_case.pk).update(status=S.IN_REVIEW)  # set-up
    _refused(
        lambda: decision_services.use_case_approve(
            actor=second_reviewer,
            use_case=use_case,
            rationale=RATIONALE,
            waiver_rule_ids=["mc-acc"],
            waiver_justification=JUSTIFICATION,
        ),
        "four_eyes_own_agency",
    )


# --- the submitter does not decide ---------------------------------------------------


def test_the_submitter_does_not_review_or_decide_even_after_moving_to_oversight(
    kit, maintainer_a, oversight_body
):
    kit.assess()
    kit.run()
    kit.submit()
    # Set-up only: the maintainer who submitted joins the oversight body.
    Membership.objects.filter(user=maintainer_a).update(
        agency=oversight_body, role=Role.REVIEWER
    )
    forget_membership(maintainer_a)

    _refused(
        lambda: lifecycle.use_case_start_review(
            actor=maintainer_a, use_case=kit.use_case
        ),
        "four_eyes_submitter",
    )
    lifecycle.use_case_start_review(actor=kit.reviewers[0], use_case=kit.use_case)
    _refused(
        lambda: decision_services.use_case_reject(
            actor=maintainer_a, use_case=kit.use_case, rationale=RATIONALE
        ),
        "four_eyes_submitter",
    )


# --- whoever asked for the evaluations neither submits nor approves ------------------


def test_whoever_requested_the_evaluations_does_not_submit_them(kit, member_a):
    kit.assess()
    run = kit.run()  # requested by Alice
    error = _refused(
        lambda: lifecycle.use_case_submit(actor=member_a, use_case=kit.use_case),
        "four_eyes_submitter_requested_evaluation",
    )
    assert str(run.pk) in error.message
    assert kit.refresh().status == S.DRAFT
    kit.submit()  # Mara, who asked for nothing, may
    assert kit.refresh().status == S.SUBMITTED


def test_a_reviewer_who_requested_an_evaluation_relied_on_does_not_approve(
    kit, reviewer, second_reviewer
):
    kit.assess()
    kit.run(requested_by=second_reviewer)  # oversight may ask for evaluations
    kit.submit()
    lifecycle.use_case_start_review(actor=reviewer, use_case=kit.use_case)

    _refused(
        lambda: decision_services.use_case_approve(
            actor=second_reviewer, use_case=kit.use_case, rationale=RATIONALE
        ),
        "four_eyes_evaluation_requester",
    )
    decision_services.use_case_approve(
        actor=reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.APPROVED


def test_the_evaluation_requester_cannot_reinstate_either(
    kit, reviewer, second_reviewer
):
    kit.assess()
    kit.run(requested_by=second_reviewer)
    kit.submit()
    lifecycle.use_case_start_review(actor=reviewer, use_case=kit.use_case)
    decision_services.use_case_approve(
        actor=reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    decision_services.use_case_suspend(
        actor=second_reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    _refused(
        lambda: decision_services.use_case_reinstate(
            actor=second_reviewer, use_case=kit.use_case, rationale=RATIONALE
        ),
        "four_eyes_evaluation_requester",
    )


# --- high risk: two approvals from two reviewers ----------------------------------


def test_a_high_risk_use_case_needs_two_approvals_from_two_reviewers(
    kit, reviewer, second_reviewer
):
    use_case = kit.in_review("high")
    assert use_case.risk_tier == "high"

    first = decision_services.use_case_approve(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.IN_REVIEW
    assert (first.from_status, first.to_status) == (S.IN_REVIEW, S.IN_REVIEW)
    assert first.expires_at is None
    event = AuditEvent.objects.get(action="use_case.approval_recorded")
    assert event.payload_data["approvals_in_round"] == 1
    assert selectors.in_service_on(first.decided_at) == []

    _refused(
        lambda: decision_services.use_case_approve(
            actor=reviewer, use_case=use_case, rationale=RATIONALE
        ),
        "four_eyes_second_reviewer",
    )
    second = decision_services.use_case_approve(
        actor=second_reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.APPROVED
    assert second.review_round == first.review_round
    assert second.expires_at is not None
    assert (
        AuditEvent.objects.get(action="use_case.approved").payload_data[
            "approvals_in_round"
        ]
        == 2
    )
    statement = second.attestation.statement["predicate"]
    assert statement["prior_approvals_in_round"] == [
        {"decision_id": first.pk, "reviewer": f"rita#{reviewer.pk}"}
    ]


def test_approvals_of_an_ended_round_do_not_count(kit, reviewer, second_reviewer):
    use_case = kit.in_review("high")
    decision_services.use_case_approve(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    decision_services.use_case_request_changes(
        actor=second_reviewer, use_case=use_case, rationale="Explain the appeal route."
    )
    kit.submit()
    lifecycle.use_case_start_review(actor=reviewer, use_case=use_case)

    decision_services.use_case_approve(
        actor=second_reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.IN_REVIEW  # one approval in this round
    decision_services.use_case_approve(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.APPROVED
    rounds = UseCaseTransition.objects.filter(
        use_case=use_case, to_status=S.IN_REVIEW
    ).count()
    assert rounds == 2


def test_the_second_approver_may_rely_on_the_first_approvers_waiver(
    kit, reviewer, second_reviewer
):
    use_case = kit.in_review("high", acc=0.3)
    first = decision_services.use_case_approve(
        actor=reviewer,
        use_case=use_case,
        rationale=RATIONALE,
        waiver_rule_ids=["baseline/mc-acc"],
        waiver_justification=JUSTIFICATION,
    )
    second = decision_services.use_case_approve(
        actor=second_reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert second.waiver == first.waiver
    assert kit.refresh().status == S.APPROVED


def test_a_limited_risk_use_case_needs_one_approval(kit, reviewer):
    use_case = kit.in_review("limited")
    decision_services.use_case_approve(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.APPROVED
