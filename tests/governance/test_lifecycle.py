"""The use case lifecycle: transitions, submission, evidence, expiry, legal hold."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from audit.models import AuditEvent
from config.exceptions import Conflict, DomainError, InvalidTransition, PolicyViolation
from governance import selectors
from governance.models import (
    Attestation,
    Decision,
    EvaluationRun,
    PolicyResult,
    Submission,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
    Waiver,
)
from governance.services import approvals, lifecycle
from governance.services import decisions as decision_services
from governance.services import policies as policy_services
from governance.services import use_cases as use_case_services
from registry.models import AIModel, ArtifactState, ModelVersion, Visibility
from tests.governance.conftest import JUSTIFICATION, RATIONALE

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

S = UseCaseStatus


def _actions(use_case) -> list[str]:
    return list(
        AuditEvent.objects.filter(
            object_type="governance.usecase", object_id=str(use_case.pk)
        )
        .order_by("seq")
        .values_list("action", flat=True)
    )


def _set_status(use_case, status) -> None:
    # Set-up only: in the product the lifecycle services move the status.
    UseCase.objects.filter(pk=use_case.pk).update(status=status)


# --- legal transitions ----------------------------------------------------------


def test_the_whole_machine_walks_through_its_legal_transitions(kit, reviewer):
    use_case = kit.approved()
    assert use_case.status == S.APPROVED

    decision_services.use_case_suspend(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.SUSPENDED
    decision_services.use_case_reinstate(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.APPROVED
    decision_services.use_case_retire(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.RETIRED

    moves = list(
        UseCaseTransition.objects.filter(use_case=use_case)
        .order_by("id")
        .values_list("from_status", "to_status")
    )
    assert moves == [
        (S.DRAFT, S.SUBMITTED),
        (S.SUBMITTED, S.IN_REVIEW),
        (S.IN_REVIEW, S.APPROVED),
        (S.APPROVED, S.SUSPENDED),
        (S.SUSPENDED, S.APPROVED),
        (S.APPROVED, S.RETIRED),
    ]
    lifecycle_actions = [a for a in _actions(use_case) if a.startswith("use_case.")]
    assert lifecycle_actions[-6:] == [
        "use_case.submitted",
        "use_case.review_started",
        "use_case.approved",
        "use_case.suspended",
        "use_case.reinstated",
        "use_case.retired",
    ]
    # Every decision is signed and names its reviewer.
    assert Attestation.objects.filter(decision__use_case=use_case).count() == 4


def test_request_changes_lets_the_agency_edit_and_submit_again(kit, reviewer):
    use_case = kit.in_review()
    decision_services.use_case_request_changes(
        actor=reviewer, use_case=use_case, rationale="Describe the human oversight."
    )
    assert kit.refresh().status == S.CHANGES_REQUESTED

    use_case_services.use_case_update(
        actor=kit.requester, use_case=use_case, human_oversight="Two clerks read it."
    )
    second = kit.submit()
    assert second.number == 2
    assert second.snapshot["use_case"]["human_oversight"] == "Two clerks read it."
    assert kit.refresh().status == S.SUBMITTED


def test_reject_is_final(kit, reviewer):
    use_case = kit.in_review()
    decision_services.use_case_reject(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.REJECTED
    with pytest.raises(InvalidTransition):
        kit.submit()


@pytest.mark.parametrize("from_status", [S.APPROVED, S.SUSPENDED])
def test_an_ended_approval_expires(kit, reviewer, from_status):
    use_case = kit.approved()
    if from_status == S.SUSPENDED:
        decision_services.use_case_suspend(
            actor=reviewer, use_case=use_case, rationale=RATIONALE
        )
    approval = selectors.approval_in_force(use_case)

    assert approvals.use_case_expire_due(now=approval.expires_at - timedelta(1)) == 0
    assert approvals.use_case_expire_due(now=approval.expires_at) == 1
    assert approvals.use_case_expire_due(now=approval.expires_at) == 0  # once

    assert kit.refresh().status == S.EXPIRED
    event = AuditEvent.objects.filter(action="use_case.expired").get()
    assert event.actor is None and event.payload_data["from"] == from_status
    assert event.payload_data["decision_id"] == approval.pk


def test_an_expired_use_case_is_recertified_by_submitting_again(kit, reviewer):
    use_case = kit.approved()
    approval = selectors.approval_in_force(use_case)
    approvals.use_case_expire(use_case=use_case, now=approval.expires_at)

    kit.run(acc=0.8)
    submission = kit.submit()
    assert submission.number == 2
    assert kit.refresh().status == S.SUBMITTED


def test_an_expired_use_case_can_be_retired(kit, reviewer):
    use_case = kit.approved()
    approvals.use_case_expire(
        use_case=use_case, now=selectors.approval_in_force(use_case).expires_at
    )
    decision_services.use_case_retire(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.RETIRED


def test_an_approved_use_case_can_be_retired_directly(kit, reviewer):
    use_case = kit.approved()
    decision_services.use_case_retire(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.RETIRED


# --- illegal transitions ----------------------------------------------------------

DECISION_SERVICES = {
    "approve": decision_services.use_case_approve,
    "request_changes": decision_services.use_case_request_changes,
    "reject": decision_services.use_case_reject,
    "suspend": decision_services.use_case_suspend,
    "reinstate": decision_services.use_case_reinstate,
    "retire": decision_services.use_case_retire,
}
ILLEGAL = [
    (action, status)
    for action in ["submit", "start_review", *DECISION_SERVICES]
    for status in S.values
    if status not in lifecycle.TRANSITIONS[action][0]
]


@pytest.mark.parametrize(("action", "status"), ILLEGAL)
def test_every_illegal_transition_is_refused_with_409_naming_from_and_to(
    kit, action, status
):
    kit.assess()
    _set_status(kit.use_case, status)
    target = lifecycle.TRANSITIONS[action][1]
    before = AuditEvent.objects.count()

    with pytest.raises(InvalidTransition) as caught:
        if action == "submit":
            lifecycle.use_case_submit(actor=kit.submitter, use_case=kit.use_case)
        elif action == "start_review":
            lifecycle.use_case_start_review(
                actor=kit.reviewers[0], use_case=kit.use_case
            )
        else:
            DECISION_SERVICES[action](
                actor=kit.reviewers[0], use_case=kit.use_case, rationale=RATIONALE
            )

    assert caught.value.status_code == 409
    assert caught.value.code == "invalid_transition"
    assert f"{status} → {target}" in caught.value.message
    assert kit.refresh().status == status
    assert AuditEvent.objects.count() == before
    assert not Decision.objects.exists()


def test_the_platform_expires_only_approved_or_suspended_use_cases(kit):
    kit.in_review()
    assert approvals.use_case_expire(use_case=kit.use_case) is False
    assert kit.refresh().status == S.IN_REVIEW


# --- submission ---------------------------------------------------------------------


def test_submission_freezes_the_content_and_runs_the_policy_engine(kit):
    kit.assess("limited")
    run = kit.run()
    submission = kit.submit()

    use_case = kit.refresh()
    result = submission.policy_result
    assert result.trigger == "submission" and result.passed
    assert submission.artifact_digest == use_case.model_version.artifact_digest
    snapshot = submission.snapshot
    assert snapshot["use_case"]["title"] == use_case.title
    assert snapshot["risk"]["tier"] == "limited"
    assert snapshot["model_version"]["artifact_sha256"] == "a" * 64
    assert snapshot["policy_result"] == {"id": result.pk, "passed": True}
    assert len(submission.snapshot_sha256) == 64
    assert result.outcomes[0]["evidence"]["run_id"] == run.pk

    with pytest.raises(Conflict) as caught:
        use_case_services.use_case_update(
            actor=kit.requester, use_case=use_case, title="Something else"
        )
    assert caught.value.code == "usecase_frozen"


def test_submission_needs_an_assessment(kit):
    kit.run()
    with pytest.raises(Conflict) as caught:
        kit.submit()
    assert caught.value.code == "risk_not_assessed"
    assert not Submission.objects.exists()


def test_submission_needs_a_verified_artifact(kit):
    kit.assess()
    ModelVersion.objects.filter(pk=kit.use_case.model_version_id).update(
        artifact_state=ArtifactState.PENDING
    )
    with pytest.raises(Conflict) as caught:
        kit.submit()
    assert caught.value.code == "artifact_not_available"


def test_submission_needs_a_validity_that_has_not_ended(kit):
    kit.assess()
    UseCase.objects.filter(pk=kit.use_case.pk).update(
        valid_until=timezone.localdate() - timedelta(days=1)
    )
    with pytest.raises(Conflict) as caught:
        kit.submit()
    assert caught.value.code == "validity_ended"


@pytest.mark.parametrize("who", ["member_b", "reviewer", "platform_admin"])
def test_only_the_owning_agency_submits(kit, who, request):
    kit.assess()
    with pytest.raises(PolicyViolation) as caught:
        lifecycle.use_case_submit(
            actor=request.getfixturevalue(who), use_case=kit.use_case
        )
    assert caught.value.code == "permission_denied"
    assert kit.refresh().status == S.DRAFT


def test_a_failed_submission_leaves_no_policy_result_and_no_event(kit, member_b):
    kit.assess()
    kit.run()
    results, events = PolicyResult.objects.count(), AuditEvent.objects.count()
    with pytest.raises(PolicyViolation):
        lifecycle.use_case_submit(actor=kit.requester, use_case=kit.use_case)
    assert PolicyResult.objects.count() == results
    assert AuditEvent.objects.count() == events


# --- approval and its evidence -----------------------------------------------------


def test_approval_sets_the_period_and_makes_the_model_public(kit, reviewer, settings):
    settings.CIVITAS_APPROVAL_DAYS = 30
    use_case = kit.approved()
    decision = Decision.objects.get(use_case=use_case)

    assert decision.approved_at == decision.decided_at
    assert decision.expires_at == decision.approved_at + timedelta(days=30)
    assert decision.policy_result.passed
    model = AIModel.objects.get(pk=use_case.model_version.model_id)
    assert model.visibility == Visibility.PUBLIC
    event = AuditEvent.objects.get(action="use_case.approved")
    assert event.payload_data["model_published"] is True
    assert event.payload_data["expires_at"] == decision.expires_at.strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )


def test_approval_ends_with_the_use_cases_last_valid_day(kit, settings):
    settings.CIVITAS_APPROVAL_DAYS = 365
    last_day = timezone.localdate() + timedelta(days=40)
    use_case_services.use_case_update(
        actor=kit.requester, use_case=kit.use_case, valid_until=last_day
    )
    use_case = kit.approved()
    decision = Decision.objects.get(use_case=use_case)
    assert timezone.localtime(decision.expires_at).date() == last_day + timedelta(1)
    assert timezone.localtime(decision.expires_at).time().isoformat() == "00:00:00"


def test_approval_is_refused_when_the_latest_policy_result_failed(kit, reviewer):
    use_case = kit.in_review()
    kit.run(acc=0.2)  # a newer run regresses below the bound
    policy_services.policy_evaluate(use_case=use_case, trigger="on_demand")

    with pytest.raises(PolicyViolation) as caught:
        decision_services.use_case_approve(
            actor=reviewer, use_case=use_case, rationale=RATIONALE
        )
    assert caught.value.code == "policy_failed"
    assert "baseline/mc-acc" in caught.value.message
    assert kit.refresh().status == S.IN_REVIEW
    assert not Decision.objects.exists()


def test_a_waiver_of_the_failed_rules_allows_the_approval(kit, reviewer):
    use_case = kit.in_review(acc=0.3)
    decision = decision_services.use_case_approve(
        actor=reviewer,
        use_case=use_case,
        rationale=RATIONALE,
        waiver_rule_ids=["mc-acc"],
        waiver_justification=JUSTIFICATION,
    )
    assert kit.refresh().status == S.APPROVED
    waiver = Waiver.objects.get()
    assert decision.waiver == waiver
    assert waiver.rule_ids == ["baseline/mc-acc"]
    assert waiver.granted_by == reviewer
    assert waiver.policy_result == decision.policy_result
    event = AuditEvent.objects.get(action="use_case.approved")
    assert event.payload_data["waiver"]["rule_ids"] == ["baseline/mc-acc"]
    assert event.payload_data["waiver"]["justification"] == JUSTIFICATION


@pytest.mark.parametrize(
    ("rule_ids", "justification", "error", "code"),
    [
        (["mc-acc"], "Too short.", DomainError, "validation_error"),
        (["no-such-rule"], JUSTIFICATION, DomainError, "waiver_unknown_rule"),
        (["other/mc-acc"], JUSTIFICATION, DomainError, "waiver_unknown_rule"),
    ],
)
def test_a_waiver_must_name_failed_rules_and_justify_itself(
    kit, reviewer, rule_ids, justification, error, code
):
    use_case = kit.in_review(acc=0.3)
    with pytest.raises(error) as caught:
        decision_services.use_case_approve(
            actor=reviewer,
            use_case=use_case,
            rationale=RATIONALE,
            waiver_rule_ids=rule_ids,
            waiver_justification=justification,
        )
    assert caught.value.code == code
    assert not Waiver.objects.exists()
    assert kit.refresh().status == S.IN_REVIEW


def test_a_waiver_must_cover_every_failed_rule(kit, reviewer):
    policy_services.policy_create(
        actor=reviewer,
        name="docs",
        title="Documentation",
        scope="platform",
        rules=[
            {
                "id": "card",
                "kind": "documentation",
                "model_card": ["ethical_considerations"],
            }
        ],
    )
    use_case = kit.in_review(acc=0.3)
    with pytest.raises(PolicyViolation) as caught:
        decision_services.use_case_approve(
            actor=reviewer,
            use_case=use_case,
            rationale=RATIONALE,
            waiver_rule_ids=["mc-acc"],
            waiver_justification=JUSTIFICATION,
        )
    assert caught.value.code == "policy_failed"
    assert "docs/card" in caught.value.message


def test_a_waiver_is_refused_when_nothing_failed(kit, reviewer):
    use_case = kit.in_review()
    with pytest.raises(DomainError) as caught:
        decision_services.use_case_approve(
            actor=reviewer,
            use_case=use_case,
            rationale=RATIONALE,
            waiver_rule_ids=["mc-acc"],
            waiver_justification=JUSTIFICATION,
        )
    assert caught.value.code == "waiver_not_needed"


def test_approval_needs_a_result_about_the_current_artifact(kit, reviewer):
    use_case = kit.in_review()
    # A verdict about another digest (built directly) is the latest one.
    PolicyResult.objects.create(
        use_case=use_case,
        model_version=use_case.model_version,
        artifact_digest="b" * 64,
        risk_tier="minimal",
        trigger="on_demand",
        passed=True,
    )
    with pytest.raises(Conflict) as caught:
        decision_services.use_case_approve(
            actor=reviewer, use_case=use_case, rationale=RATIONALE
        )
    assert caught.value.code == "policy_result_outdated"


def test_a_prohibited_use_is_never_approved_even_with_a_passing_result(kit, reviewer):
    use_case = kit.in_review("prohibited")
    assert use_case.risk_tier == "prohibited"
    with pytest.raises(PolicyViolation) as caught:
        decision_services.use_case_approve(
            actor=reviewer, use_case=use_case, rationale=RATIONALE
        )
    assert caught.value.code == "prohibited_tier"
    decision_services.use_case_reject(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert kit.refresh().status == S.REJECTED


@pytest.mark.parametrize("rationale", ["", "   ", "ok"])
def test_every_decision_needs_a_rationale(kit, reviewer, rationale):
    use_case = kit.in_review()
    with pytest.raises(DomainError) as caught:
        decision_services.use_case_reject(
            actor=reviewer, use_case=use_case, rationale=rationale
        )
    assert caught.value.fields["rationale"]
    assert not Decision.objects.exists()


def test_reinstating_after_the_approval_ended_is_refused(kit, reviewer, settings):
    settings.CIVITAS_APPROVAL_DAYS = 0  # the approval ends as it is given
    use_case = kit.approved()
    decision_services.use_case_suspend(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    with pytest.raises(Conflict) as caught:
        decision_services.use_case_reinstate(
            actor=reviewer, use_case=use_case, rationale=RATIONALE
        )
    assert caught.value.code == "approval_period_over"
    assert kit.refresh().status == S.SUSPENDED


def test_reinstating_keeps_the_end_of_the_approval_in_force(kit, reviewer):
    use_case = kit.approved()
    first = selectors.approval_in_force(use_case)
    decision_services.use_case_suspend(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    again = decision_services.use_case_reinstate(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    assert again.expires_at == first.expires_at
    assert selectors.approval_in_force(use_case) == again


# --- approvals fall: regression and stale evidence --------------------------------


def test_a_regressing_run_returns_the_approved_use_case_to_review(kit, reviewer):
    use_case = kit.approved()
    kit.run(acc=0.2)
    result = policy_services.policy_evaluate(use_case=use_case, trigger="evaluation")

    assert approvals.use_case_recheck(use_case=use_case, result=result) is True
    assert kit.refresh().status == S.IN_REVIEW
    event = AuditEvent.objects.get(action="use_case.returned_to_review")
    assert event.actor is None
    assert event.payload_data["failed"] == ["baseline/mc-acc"]
    assert "below the minimum" in event.payload_data["reason"]
    transition = UseCaseTransition.objects.filter(use_case=use_case).latest("id")
    assert transition.to_status == S.IN_REVIEW and transition.actor is None
    # Not in service any more; a new round needs a passing result or a waiver.
    assert selectors.in_service_on(timezone.now()) == []
    with pytest.raises(PolicyViolation):
        decision_services.use_case_approve(
            actor=reviewer, use_case=use_case, rationale=RATIONALE
        )
    assert approvals.use_case_recheck(use_case=use_case, result=result) is False


def test_a_passing_or_waived_recheck_leaves_the_approval(kit, reviewer):
    use_case = kit.in_review(acc=0.3)
    decision_services.use_case_approve(
        actor=reviewer,
        use_case=use_case,
        rationale=RATIONALE,
        waiver_rule_ids=["mc-acc"],
        waiver_justification=JUSTIFICATION,
    )
    waived = PolicyResult.objects.latest("created_at")
    assert approvals.use_case_recheck(use_case=use_case, result=waived) is False
    kit.run(acc=0.95)
    passing = policy_services.policy_evaluate(use_case=use_case, trigger="evaluation")
    assert approvals.use_case_recheck(use_case=use_case, result=passing) is False
    assert kit.refresh().status == S.APPROVED


def _approve_with_waiver(kit, reviewer, *, acc: float):
    use_case = kit.in_review(acc=acc)
    decision_services.use_case_approve(
        actor=reviewer,
        use_case=use_case,
        rationale=RATIONALE,
        waiver_rule_ids=["mc-acc"],
        waiver_justification=JUSTIFICATION,
    )
    assert kit.refresh().status == S.APPROVED
    return use_case


def _evaluated_again(kit, use_case, *, acc: float, callbacks_capture) -> PolicyResult:
    """A new run of the approved version, checked as an evaluation checks it."""
    from workers import tasks

    kit.run(acc=acc)
    with callbacks_capture() as callbacks, transaction.atomic():
        [result] = policy_services.policy_evaluate_for_version(
            model_version=use_case.model_version, trigger="evaluation"
        )
    assert result.passed is False
    # The recheck is queued for the failed result; the policy failure is
    # announced to notifications (audit.signals.event_recorded).
    assert len(callbacks) == 2
    tasks.usecase_recheck(result.pk)  # what the queued task runs
    return result


@pytest.mark.parametrize("acc", [0.3, 0.4])
def test_a_waiver_holds_on_a_new_run_measuring_the_same_or_better(
    kit, reviewer, acc, django_capture_on_commit_callbacks
):
    use_case = _approve_with_waiver(kit, reviewer, acc=0.3)
    _evaluated_again(
        kit, use_case, acc=acc, callbacks_capture=django_capture_on_commit_callbacks
    )
    assert kit.refresh().status == S.APPROVED
    assert ModelVersion.objects.get(pk=use_case.model_version_id).status == "approved"
    assert not AuditEvent.objects.filter(action="use_case.returned_to_review")


def test_a_waiver_lapses_when_the_waived_value_gets_worse(
    kit, reviewer, django_capture_on_commit_callbacks
):
    use_case = _approve_with_waiver(kit, reviewer, acc=0.3)
    result = _evaluated_again(
        kit, use_case, acc=0.2, callbacks_capture=django_capture_on_commit_callbacks
    )
    assert kit.refresh().status == S.IN_REVIEW
    event = AuditEvent.objects.get(action="use_case.returned_to_review")
    assert event.payload_data["policy_result_id"] == result.pk
    assert event.payload_data["failed"] == ["baseline/mc-acc"]
    reason = event.payload_data["reason"]
    assert "multiple_choice.acc is now 0.2, worse than the 0.3 waived" in reason
    transition = UseCaseTransition.objects.filter(use_case=use_case).latest("id")
    assert transition.reason == reason


@pytest.mark.parametrize(("acc", "reinstated"), [(0.3, True), (0.2, False)])
def test_a_reinstatement_relies_on_the_waiver_in_force_until_the_value_worsens(
    kit, reviewer, acc, reinstated
):
    use_case = _approve_with_waiver(kit, reviewer, acc=0.3)
    waiver = Waiver.objects.get()
    decision_services.use_case_suspend(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    kit.run(acc=acc)
    newer = policy_services.policy_evaluate(use_case=use_case, trigger="on_demand")
    assert newer.passed is False and newer != waiver.policy_result

    if reinstated:
        decision = decision_services.use_case_reinstate(
            actor=reviewer, use_case=use_case, rationale=RATIONALE
        )
        assert decision.waiver == waiver
        assert decision.policy_result == newer
        assert kit.refresh().status == S.APPROVED
    else:
        with pytest.raises(PolicyViolation) as caught:
            decision_services.use_case_reinstate(
                actor=reviewer, use_case=use_case, rationale=RATIONALE
            )
        assert caught.value.code == "policy_failed"
        assert kit.refresh().status == S.SUSPENDED


def test_stale_evidence_returns_the_approved_use_case_to_review(kit):
    use_case = kit.approved()
    [run] = EvaluationRun.objects.all()
    fresh_until = selectors.evidence_fresh_until(
        PolicyResult.objects.filter(use_case=use_case).latest("created_at")
    )
    assert fresh_until == run.finished_at + timedelta(days=30)

    assert approvals.use_case_recheck_stale(now=fresh_until - timedelta(1)) == 0
    assert kit.refresh().status == S.APPROVED
    # Set-up only: the run as old as it will be once its freshness is spent.
    EvaluationRun.objects.filter(pk=run.pk).update(
        finished_at=timezone.now() - timedelta(days=31)
    )
    assert approvals.use_case_recheck_stale(now=fresh_until) == 1

    assert kit.refresh().status == S.IN_REVIEW
    event = AuditEvent.objects.get(action="use_case.returned_to_review")
    assert "stale" in event.payload_data["reason"]
    assert event.payload_data["trigger"] == "on_demand"


def test_a_failed_evaluation_check_queues_the_recheck_on_commit(
    kit, django_capture_on_commit_callbacks
):
    from workers import tasks

    use_case = kit.approved()
    kit.run(acc=0.2)
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        result = policy_services.policy_evaluate(
            use_case=use_case, trigger="evaluation"
        )
        assert use_case_services.use_case_recheck_enqueue(result=result) is True
        # Nothing moves inside the evaluation's transaction.
        assert kit.refresh().status == S.APPROVED
    assert len(callbacks) == 2  # the recheck, and the policy failure's announcement

    # What the queued task does once a worker runs it (called in-process here).
    assert tasks.usecase_recheck(result.pk) is True
    assert kit.refresh().status == S.IN_REVIEW
    assert tasks.usecase_recheck(result.pk) is False  # safe to run twice


def test_the_post_evaluation_policy_check_queues_the_recheck_of_a_regression(
    kit, django_capture_on_commit_callbacks
):
    """The path an evaluation takes: policy_evaluate_for_version wires the hook."""
    use_case = kit.approved()
    kit.run(acc=0.2)
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        results = policy_services.policy_evaluate_for_version(
            model_version=use_case.model_version, trigger="evaluation"
        )
    assert [r.passed for r in results] == [False]
    assert len(callbacks) == 2  # the recheck, and the policy failure's announcement
    assert kit.refresh().status == S.APPROVED  # moved by the task, after commit


def test_a_passing_check_queues_nothing(kit, django_capture_on_commit_callbacks):
    use_case = kit.approved()
    with django_capture_on_commit_callbacks() as callbacks:
        result = policy_services.policy_evaluate(
            use_case=use_case, trigger="evaluation"
        )
        assert use_case_services.use_case_recheck_enqueue(result=result) is False
    assert callbacks == []


# --- what was in service when ------------------------------------------------------


def test_in_service_on_answers_from_history_not_current_state(kit, reviewer):
    use_case = kit.approved()
    approved = Decision.objects.get(kind="approve")
    suspended = decision_services.use_case_suspend(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    reinstated = decision_services.use_case_reinstate(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    retired = decision_services.use_case_retire(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    tick = timedelta(microseconds=1)

    def served(moment):
        return [
            (e.use_case.pk, e.model_version.pk) for e in selectors.in_service_on(moment)
        ]

    expected = [(use_case.pk, use_case.model_version_id)]
    assert served(approved.decided_at - tick) == []
    assert served(approved.decided_at) == expected
    assert served(suspended.decided_at - tick) == expected
    assert served(suspended.decided_at) == []
    assert served(reinstated.decided_at) == expected
    assert served(retired.decided_at - tick) == expected
    assert served(retired.decided_at) == []
    # An approval that ended before the platform noticed is not in service.
    assert served(approved.expires_at) == []
    [entry] = selectors.in_service_on(reinstated.decided_at)
    assert entry.decision == reinstated and entry.expires_at == approved.expires_at


def test_in_service_on_refuses_a_naive_instant():
    with pytest.raises(ValueError):
        selectors.in_service_on(timezone.now().replace(tzinfo=None))


# --- legal hold ---------------------------------------------------------------------


def test_nothing_an_approval_or_evaluation_references_can_be_deleted(kit):
    use_case = kit.approved()
    run = EvaluationRun.objects.get()
    from governance.services.attestations import attestation_for_run

    attestation_for_run(run=run)

    with pytest.raises(ProtectedError):
        use_case.model_version.delete()
    with pytest.raises(ProtectedError):
        run.delete()
    with pytest.raises(ProtectedError):
        use_case.delete()
    assert ModelVersion.objects.filter(pk=use_case.model_version_id).exists()
    assert EvaluationRun.objects.filter(pk=run.pk).exists()


@pytest.mark.parametrize(
    "model", [Submission, UseCaseTransition, Decision, Attestation, Waiver]
)
def test_the_database_refuses_to_change_or_delete_a_record(kit, reviewer, model):
    use_case = kit.in_review(acc=0.3)
    decision_services.use_case_approve(
        actor=reviewer,
        use_case=use_case,
        rationale=RATIONALE,
        waiver_rule_ids=["mc-acc"],
        waiver_justification=JUSTIFICATION,
    )
    row = model.objects.first()
    for attempt in (
        lambda: model.objects.filter(pk=row.pk).delete(),
        lambda: model.objects.filter(pk=row.pk).update(id=row.pk),
    ):
        with pytest.raises(DatabaseError), transaction.atomic():
            attempt()
    assert model.objects.filter(pk=row.pk).exists()


# --- the periodic and queued tasks on a real worker -------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_expires_approvals_and_returns_regressions_to_review(
    kit, reviewer, settings
):
    from django.conf import settings as live

    from tests.conftest import celery_worker, database_url, process_env, wait_until
    from workers import tasks

    settings.CIVITAS_APPROVAL_DAYS = 0  # the approval ends as it is given
    use_case = kit.approved()

    def status():
        return UseCase.objects.get(pk=use_case.pk).status

    env = process_env(DATABASE_URL=database_url())
    # Expiry and rechecks are housekeeping: routed to that queue.
    queues = f"{live.CELERY_TASK_DEFAULT_QUEUE},{live.CELERY_HOUSEKEEPING_QUEUE}"
    with celery_worker(env, queues):
        assert tasks.usecase_expire.delay().get(timeout=120) == 1
        assert status() == S.EXPIRED

        settings.CIVITAS_APPROVAL_DAYS = 365
        kit.run(acc=0.9)
        kit.submit()
        lifecycle.use_case_start_review(actor=reviewer, use_case=use_case)
        decision_services.use_case_approve(
            actor=reviewer, use_case=use_case, rationale=RATIONALE
        )
        kit.run(acc=0.1)
        with transaction.atomic():
            result = policy_services.policy_evaluate(
                use_case=use_case, trigger="evaluation"
            )
            use_case_services.use_case_recheck_enqueue(result=result)
        wait_until(
            lambda: status() == S.IN_REVIEW, timeout=120, what="the recheck task"
        )
    event = AuditEvent.objects.get(action="use_case.returned_to_review")
    assert event.payload_data["policy_result_id"] == result.pk
