"""The lifecycle of a use case: submission, review, decisions, waivers, expiry.

A use case (and the model version it names) moves only through the services
below::

    draft | changes_requested | expired ─submit─▶ submitted
    submitted ─start_review─▶ in_review
    in_review ─approve─▶ approved (high tier: at the second approval)
    in_review ─request_changes─▶ changes_requested
    in_review ─reject─▶ rejected
    approved ─suspend─▶ suspended ─reinstate─▶ approved
    approved | suspended | expired ─retire─▶ retired
    approved | suspended ─expire─▶ expired          (the platform, at expires_at)
    approved ─return to review─▶ in_review          (the platform, failed evidence)

Each service is keyword-only, ``@transaction.atomic``, locks the use case row
(``SELECT ... FOR UPDATE``) before reading its status, writes one
``UseCaseTransition`` and records one audit event (plus
``model_version.status_changed`` when the version's derived status moves).
Lock order is always the use case row, then the row of the model version it
names (taken by ``_lock``; each status change recomputes the version's
derived status through ``registry.services.model_version_status_sync``,
inside the same transaction), then the audit chain head (taken by
``audit.record``); nothing here locks a use case while holding the chain
head, which is why a failed policy check after an evaluation queues its
recheck on commit instead of running it in the evaluation's transaction.

Separation of duties (four eyes), each refusal naming its rule in the error
code: only reviewers decide (``four_eyes_reviewer_only``: platform
administrators operate the platform and take no oversight decisions); nobody
decides on their own agency's use case (``four_eyes_own_agency``); the
submitter does not decide (``four_eyes_submitter``); whoever requested an
evaluation the policy result relies on neither submits it
(``four_eyes_submitter_requested_evaluation``) nor approves it
(``four_eyes_evaluation_requester``); a ``high`` tier case needs approvals
from two different reviewers in the same review round
(``four_eyes_second_reviewer``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit import services as audit
from audit.verify import canonical_json, canonical_value
from config.celery import send_on_commit
from config.exceptions import Conflict, DomainError, InvalidTransition, PolicyViolation
from governance.attestations import attestation_for_decision, evidence_run_ids
from governance.models import (
    Decision,
    DecisionKind,
    EvaluationRun,
    PolicyResult,
    PolicyTrigger,
    RiskTier,
    RuleStatus,
    Submission,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
    Waiver,
)
from registry import services as registry_services
from registry.models import (
    ArtifactState,
    ModelVersion,
    Role,
    VersionStatus,
    user_agency_id,
    user_role,
)

S = UseCaseStatus

# What each action may start from, and where it leads.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "submit": (frozenset({S.DRAFT, S.CHANGES_REQUESTED, S.EXPIRED}), S.SUBMITTED),
    "start_review": (frozenset({S.SUBMITTED}), S.IN_REVIEW),
    "approve": (frozenset({S.IN_REVIEW}), S.APPROVED),
    "request_changes": (frozenset({S.IN_REVIEW}), S.CHANGES_REQUESTED),
    "reject": (frozenset({S.IN_REVIEW}), S.REJECTED),
    "suspend": (frozenset({S.APPROVED}), S.SUSPENDED),
    "reinstate": (frozenset({S.SUSPENDED}), S.APPROVED),
    "retire": (frozenset({S.APPROVED, S.SUSPENDED, S.EXPIRED}), S.RETIRED),
    "expire": (frozenset({S.APPROVED, S.SUSPENDED}), S.EXPIRED),
    "return_to_review": (frozenset({S.APPROVED}), S.IN_REVIEW),
}
DECISION_ACTIONS = {
    DecisionKind.APPROVE: "approve",
    DecisionKind.REJECT: "reject",
    DecisionKind.REQUEST_CHANGES: "request_changes",
    DecisionKind.SUSPEND: "suspend",
    DecisionKind.REINSTATE: "reinstate",
    DecisionKind.RETIRE: "retire",
}
# The audit action of each decision that moves the status.
DECISION_EVENTS = {
    DecisionKind.APPROVE: "use_case.approved",
    DecisionKind.REJECT: "use_case.rejected",
    DecisionKind.REQUEST_CHANGES: "use_case.changes_requested",
    DecisionKind.SUSPEND: "use_case.suspended",
    DecisionKind.REINSTATE: "use_case.reinstated",
    DecisionKind.RETIRE: "use_case.retired",
}
# Decisions that put a use case in service: they look at the evidence.
ENABLING_KINDS = frozenset({DecisionKind.APPROVE, DecisionKind.REINSTATE})
WRITER_ROLES = frozenset({Role.MEMBER, Role.MAINTAINER})
RATIONALE_MIN_LENGTH = 10
RATIONALE_MAX_LENGTH = 10_000
WAIVER_MIN_JUSTIFICATION = 50
WAIVER_MAX_JUSTIFICATION = 10_000
HIGH_TIER_APPROVALS = 2

__all__ = [
    "TRANSITIONS",
    "WAIVER_MIN_JUSTIFICATION",
    "InService",
    "approval_expiry",
    "approval_in_force",
    "evidence_fresh_until",
    "in_service_on",
    "review_round_of",
    "use_case_approve",
    "use_case_expire",
    "use_case_expire_due",
    "use_case_recheck",
    "use_case_recheck_enqueue",
    "use_case_recheck_stale",
    "use_case_reinstate",
    "use_case_reject",
    "use_case_request_changes",
    "use_case_retire",
    "use_case_start_review",
    "use_case_submit",
    "use_case_suspend",
]


# --- helpers ---------------------------------------------------------------------


def _lock(use_case: UseCase) -> UseCase:
    """Lock the use case row, then its version's row; return it fresh.

    The version is locked here, right after the use case and before anything
    (a policy check, an attestation) records an audit event and so takes the
    chain head: the order is use case, version, chain head, as everywhere
    else that locks a version (artifact verification, version edits).
    """
    locked = (
        UseCase.objects.select_related(
            "agency", "questionnaire", "model_version__model__agency"
        )
        .select_for_update(of=("self",))
        .get(pk=use_case.pk)
    )
    list(
        ModelVersion.objects.select_for_update(of=("self",))
        .filter(pk=locked.model_version_id)
        .values_list("pk", flat=True)
    )
    return locked


def _check_transition(use_case: UseCase, action: str) -> str:
    """The target status of ``action``; ``InvalidTransition`` (409) if not allowed."""
    sources, target = TRANSITIONS[action]
    if use_case.status not in sources:
        allowed = ", ".join(sorted(sources))
        raise InvalidTransition(
            f"Use case {use_case.pk} is {use_case.status}: {use_case.status} → "
            f"{target} ({action.replace('_', ' ')}) is not allowed; it is allowed "
            f"only from {allowed}.",
            code="invalid_transition",
            fields={
                "status": [
                    {
                        "code": "invalid_transition",
                        "message": f"{use_case.status} → {target}",
                    }
                ]
            },
        )
    return target


def _move(
    use_case: UseCase,
    *,
    to_status: str,
    actor,
    now: datetime,
    reason: str = "",
    submission: Submission | None = None,
    decision: Decision | None = None,
) -> UseCaseTransition:
    """Write the transition and the new status of a locked use case."""
    transition = UseCaseTransition.objects.create(
        use_case=use_case,
        from_status=use_case.status,
        to_status=to_status,
        actor=actor,
        reason=reason,
        submission=submission,
        decision=decision,
        created_at=now,
    )
    use_case.status = to_status
    use_case.save(update_fields=["status", "updated_at"])
    _sync_version(use_case, actor=actor)
    return transition


# Use case statuses that keep a version in review, and those that ended.
_ACTIVE_REVIEW = frozenset({S.SUBMITTED, S.IN_REVIEW})
_ENDED = frozenset({S.RETIRED, S.EXPIRED, S.REJECTED})


def version_status_for(statuses) -> str:
    """The status a version derives from its use cases' statuses.

    First match wins: ``approved`` if any use case is approved; else
    ``suspended`` if any is suspended; else ``in_review`` if any is
    submitted or in review; else ``retired`` if at least one is retired and
    every other one has ended too (retired, expired or rejected); else
    ``draft`` — no use case, only drafts or cases sent back for changes,
    or only expired and rejected ones (nothing was retired for good: an
    expired case may be re-certified, so the version is not retired).
    """
    found = set(statuses)
    if S.APPROVED in found:
        return VersionStatus.APPROVED
    if S.SUSPENDED in found:
        return VersionStatus.SUSPENDED
    if found & _ACTIVE_REVIEW:
        return VersionStatus.IN_REVIEW
    if S.RETIRED in found and found <= _ENDED:
        return VersionStatus.RETIRED
    return VersionStatus.DRAFT


def _sync_version(use_case: UseCase, *, actor) -> None:
    """Recompute the status of the version a locked use case names.

    Called by ``_move``, after ``_lock`` took the use case and version rows
    (the service locks the version again, a no-op). The statuses are read
    once the version is locked, so sibling use cases moving at once
    serialise on it and the later sees the earlier's status.
    """
    version_id = use_case.model_version_id
    statuses: list[str] = []

    def target() -> str:
        statuses[:] = sorted(
            UseCase.objects.filter(model_version_id=version_id).values_list(
                "status", flat=True
            )
        )
        return version_status_for(statuses)

    registry_services.model_version_status_sync(
        actor=actor,
        version=use_case.model_version,
        status=target,
        detail=lambda: {"use_case_statuses": statuses},
    )


def _text(value: str, *, field: str, minimum: int, maximum: int, what: str) -> str:
    """Stripped text of bounded length; ``DomainError`` (400) naming the field."""
    text = (value or "").strip()
    if len(text) < minimum or len(text) > maximum:
        message = f"{what} takes {minimum} to {maximum:,} characters."
        raise DomainError(
            message,
            code="validation_error",
            fields={field: [{"code": "length", "message": message}]},
        )
    return text


def _refuse(rule: str, message: str) -> PolicyViolation:
    """A separation-of-duties refusal naming its rule in the code and the message."""
    return PolicyViolation(f"{message} (rule {rule})", code=rule)


def _latest_submission(use_case: UseCase) -> Submission:
    submission = use_case.submissions.order_by("-number").first()
    if submission is None:  # pragma: no cover - every reviewed case was submitted
        raise Conflict("The use case was never submitted.", code="not_submitted")
    return submission


def _latest_result(use_case: UseCase) -> PolicyResult | None:
    return (
        PolicyResult.objects.filter(use_case_id=use_case.pk)
        .order_by("-created_at", "-id")
        .first()
    )


def review_round_of(use_case: UseCase) -> UseCaseTransition | None:
    """The transition into ``in_review`` that opened the current review round."""
    return (
        UseCaseTransition.objects.filter(use_case_id=use_case.pk, to_status=S.IN_REVIEW)
        .order_by("-id")
        .first()
    )


def approval_in_force(use_case: UseCase) -> Decision | None:
    """The latest decision that put the use case in service (approve, reinstate)."""
    return (
        Decision.objects.filter(use_case_id=use_case.pk, expires_at__isnull=False)
        .select_related("waiver")
        .order_by("-decided_at", "-id")
        .first()
    )


def approval_expiry(*, valid_until: date, now: datetime) -> datetime:
    """When an approval given at ``now`` ends.

    The earlier of the end of the use case's last valid day (in
    ``TIME_ZONE``) and ``now`` plus ``CIVITAS_APPROVAL_DAYS``.
    """
    zone = timezone.get_default_timezone()
    end_of_validity = datetime.combine(valid_until + timedelta(days=1), time.min, zone)
    return min(end_of_validity, now + timedelta(days=settings.CIVITAS_APPROVAL_DAYS))


def _content(use_case: UseCase) -> dict[str, Any]:
    """What a submission freezes of the use case, in canonical JSON values."""
    version = use_case.model_version
    questionnaire = use_case.questionnaire
    return canonical_value(
        {
            "use_case": {
                "id": use_case.pk,
                "agency": use_case.agency.slug,
                "title": use_case.title,
                "purpose": use_case.purpose,
                "public_service": use_case.public_service,
                "affected_people": use_case.affected_people,
                "decision_informed": use_case.decision_informed,
                "human_oversight": use_case.human_oversight,
                "valid_until": use_case.valid_until,
            },
            "risk": {
                "tier": use_case.risk_tier,
                "score": use_case.risk_score,
                "questionnaire": str(questionnaire) if questionnaire else None,
                "answers": use_case.answers,
                "reasons": use_case.risk_reasons,
                "assessed_at": use_case.assessed_at,
            },
            "model_version": {
                "id": version.pk,
                "name": str(version),
                "artifact_sha256": version.artifact_digest,
            },
        }
    )


def _requesters(result: PolicyResult | None) -> dict[int, list[int]]:
    """Who requested the runs a policy result relies on: user id → run ids."""
    found: dict[int, list[int]] = {}
    for run_id, user_id in EvaluationRun.objects.filter(
        pk__in=evidence_run_ids(result)
    ).values_list("pk", "requested_by_id"):
        found.setdefault(user_id, []).append(run_id)
    return found


def _failed_rules(result: PolicyResult) -> list[str]:
    return sorted({f"{policy}/{rule}" for policy, rule in result.failed_rules()})


# --- who may act ---------------------------------------------------------------


def _check_reviewer(actor, use_case: UseCase) -> None:
    """Only reviewers decide, never on their own agency's use case."""
    if user_role(actor) != Role.REVIEWER:
        raise _refuse(
            "four_eyes_reviewer_only",
            "Only oversight reviewers decide on use cases; platform administrators "
            "operate the platform and take no oversight decisions.",
        )
    if user_agency_id(actor) == use_case.agency_id:
        raise _refuse(
            "four_eyes_own_agency",
            "Nobody decides on their own agency's use case.",
        )


def _check_not_submitter(actor, submission: Submission) -> None:
    if submission.submitted_by_id == actor.pk:
        raise _refuse(
            "four_eyes_submitter",
            f"You submitted this use case (submission {submission.number}); "
            "another person decides on it.",
        )


def _check_not_requester(actor, result: PolicyResult | None) -> None:
    runs = _requesters(result).get(actor.pk)
    if runs:
        raise _refuse(
            "four_eyes_evaluation_requester",
            "You requested evaluation run(s) "
            f"{', '.join(map(str, sorted(runs)))} that this approval relies on; "
            "another reviewer approves.",
        )


# --- evidence ------------------------------------------------------------------


def _resolve_rule_ids(rule_ids: list[str], failed: list[str]) -> list[str]:
    """Map ``policy/rule`` or bare ``rule`` ids to failed ``policy/rule`` ids.

    Raises ``DomainError`` (400, field ``waiver.rule_ids``) naming ids that
    match no failed rule, or a bare id that matches rules of several policies.
    """
    resolved, unknown = set(), []
    for raw in rule_ids:
        rule_id = str(raw).strip()
        if "/" in rule_id:
            matches = [f for f in failed if f == rule_id]
        else:
            matches = [f for f in failed if f.split("/", 1)[1] == rule_id]
        if len(matches) != 1:
            unknown.append(rule_id)
        else:
            resolved.add(matches[0])
    if unknown:
        message = (
            f"Not a failed rule of the latest policy result (or ambiguous: write "
            f"policy/rule): {', '.join(unknown)}. Failed: {', '.join(failed)}."
        )
        raise DomainError(
            message,
            code="waiver_unknown_rule",
            fields={"waiver": {"rule_ids": [{"code": "unknown", "message": message}]}},
        )
    return sorted(resolved)


def _check_evidence(
    *,
    actor,
    use_case: UseCase,
    now: datetime,
    waiver_rule_ids: list[str] | None,
    waiver_justification: str,
    reusable: list[Waiver],
) -> tuple[PolicyResult, Waiver | None]:
    """The passing (or waived) latest policy result an approval relies on.

    The latest result must be about the version's current artifact digest
    (``Conflict`` ``policy_result_outdated`` otherwise). If it failed, every
    failed rule must be waived: by a waiver given now, or by one in
    ``reusable`` on that very result. Raises ``PolicyViolation``
    ``policy_failed`` naming the rules left unwaived, ``DomainError`` for a
    waiver that is not needed, names unknown rules, or lacks a justification.
    """
    version = use_case.model_version
    result = _latest_result(use_case)
    if result is None:
        raise Conflict(
            "The use case has no policy result; run the policy check.",
            code="no_policy_result",
        )
    if (
        result.model_version_id != version.pk
        or result.artifact_digest != version.artifact_digest
    ):
        raise Conflict(
            f"The latest policy result ({result.pk}) is about artifact "
            f"{result.artifact_digest[:12] or '(none)'}, not the current "
            f"{version.artifact_digest[:12]}; run the policy check again.",
            code="policy_result_outdated",
        )
    failed = _failed_rules(result)
    if waiver_rule_ids is not None and not failed:
        raise DomainError(
            f"Policy result {result.pk} passed: there is nothing to waive.",
            code="waiver_not_needed",
            fields={"waiver": [{"code": "not_needed", "message": "Nothing failed."}]},
        )
    if not failed:
        return result, None
    if waiver_rule_ids is None:
        for waiver in reusable:
            if waiver.policy_result_id == result.pk and set(waiver.rule_ids) >= set(
                failed
            ):
                return result, waiver
        raise _refuse(
            "policy_failed",
            f"Policy result {result.pk} failed {', '.join(failed)}; approval needs "
            "a passing result or a waiver of each failed rule with a justification.",
        )
    waived = _resolve_rule_ids(waiver_rule_ids, failed)
    missing = sorted(set(failed) - set(waived))
    if missing:
        raise _refuse(
            "policy_failed",
            f"Policy result {result.pk} also failed {', '.join(missing)}, which the "
            "waiver does not name; every failed rule must be waived.",
        )
    justification = _text(
        waiver_justification,
        field="waiver.justification",
        minimum=WAIVER_MIN_JUSTIFICATION,
        maximum=WAIVER_MAX_JUSTIFICATION,
        what="A waiver's justification",
    )
    waiver = Waiver.objects.create(
        use_case=use_case,
        policy_result=result,
        rule_ids=waived,
        justification=justification,
        granted_by=actor,
        granted_at=now,
    )
    return result, waiver


# --- submission and review -------------------------------------------------------


@transaction.atomic
def use_case_submit(*, actor, use_case: UseCase) -> Submission:
    """Submit a use case for review, freezing what it says.

    From ``draft``, ``changes_requested`` or ``expired`` (re-certification).
    By a member or maintainer of the owning agency. Needs a risk assessment,
    a verified artifact and a validity that has not ended (``Conflict``).
    Runs the policy engine (trigger ``submission``) and stores a
    ``Submission`` whose snapshot holds the use case, its assessment, the
    version's digest and the policy result id. Whoever requested an
    evaluation the result relies on may not submit it
    (``four_eyes_submitter_requested_evaluation``). Records
    ``use_case.submitted``.
    """
    from governance.usecase_services import policy_evaluate

    locked = _lock(use_case)
    target = _check_transition(locked, "submit")
    role = user_role(actor)
    if user_agency_id(actor) != locked.agency_id or role not in WRITER_ROLES:
        raise PolicyViolation(
            "Only members and maintainers of the owning agency submit its use cases.",
            code="permission_denied",
        )
    version = locked.model_version
    if version.artifact_state != ArtifactState.AVAILABLE or not version.artifact_digest:
        raise Conflict(
            f"{version} has no verified artifact; upload or verify it first.",
            code="artifact_not_available",
        )
    if locked.risk_tier is None:
        raise Conflict(
            "The use case has no risk assessment; answer the questionnaire first.",
            code="risk_not_assessed",
        )
    if locked.valid_until < timezone.localdate():
        raise Conflict(
            f"The use case was valid until {locked.valid_until}; set a later date.",
            code="validity_ended",
        )
    result = policy_evaluate(
        use_case=locked, trigger=PolicyTrigger.SUBMISSION, actor=actor
    )
    runs = _requesters(result).get(actor.pk)
    if runs:
        raise _refuse(
            "four_eyes_submitter_requested_evaluation",
            f"You requested evaluation run(s) {', '.join(map(str, sorted(runs)))} "
            "that this submission relies on; another person of the agency submits.",
        )
    now = timezone.now()
    snapshot = {
        **_content(locked),
        "policy_result": {"id": result.pk, "passed": result.passed},
    }
    previous = locked.submissions.order_by("-number").first()
    submission = Submission.objects.create(
        use_case=locked,
        number=previous.number + 1 if previous else 1,
        submitted_by=actor,
        submitted_at=now,
        model_version=version,
        artifact_digest=version.artifact_digest,
        policy_result=result,
        snapshot=snapshot,
        snapshot_sha256=hashlib.sha256(canonical_json(snapshot)).hexdigest(),
    )
    from_status = locked.status
    _move(locked, to_status=target, actor=actor, now=now, submission=submission)
    audit.record(
        actor=actor,
        action="use_case.submitted",
        obj=locked,
        agency=locked.agency,
        payload={
            "use_case_id": locked.pk,
            "submission_id": submission.pk,
            "number": submission.number,
            "from": from_status,
            "to": target,
            "model_version_id": version.pk,
            "artifact_sha256": version.artifact_digest,
            "policy_result_id": result.pk,
            "policy_passed": result.passed,
            "snapshot_sha256": submission.snapshot_sha256,
        },
    )
    return submission


@transaction.atomic
def use_case_start_review(*, actor, use_case: UseCase) -> UseCaseTransition:
    """Take a submitted use case into review, opening a review round.

    By a reviewer of another agency who did not submit it (the four-eyes
    rules of deciding apply to reviewing). Records ``use_case.review_started``.
    """
    locked = _lock(use_case)
    target = _check_transition(locked, "start_review")
    _check_reviewer(actor, locked)
    submission = _latest_submission(locked)
    _check_not_submitter(actor, submission)
    from_status = locked.status
    transition = _move(
        locked,
        to_status=target,
        actor=actor,
        now=timezone.now(),
        submission=submission,
    )
    audit.record(
        actor=actor,
        action="use_case.review_started",
        obj=locked,
        agency=locked.agency,
        payload={
            "use_case_id": locked.pk,
            "submission_id": submission.pk,
            "from": from_status,
            "to": target,
            "review_round_id": transition.pk,
        },
    )
    return transition


# --- decisions -----------------------------------------------------------------


def _decide(
    *,
    actor,
    use_case: UseCase,
    kind: str,
    rationale: str,
    waiver_rule_ids: list[str] | None = None,
    waiver_justification: str = "",
) -> Decision:
    """The common path of every reviewer decision (inside the caller's atomic)."""
    locked = _lock(use_case)
    target = _check_transition(locked, DECISION_ACTIONS[kind])
    _check_reviewer(actor, locked)
    rationale = _text(
        rationale,
        field="rationale",
        minimum=RATIONALE_MIN_LENGTH,
        maximum=RATIONALE_MAX_LENGTH,
        what="A rationale",
    )
    if waiver_rule_ids is not None and kind not in ENABLING_KINDS:
        raise DomainError(
            "Only an approval or a reinstatement takes a waiver.",
            code="waiver_not_allowed",
            fields={"waiver": [{"code": "not_allowed", "message": "Not here."}]},
        )
    submission = _latest_submission(locked)
    _check_not_submitter(actor, submission)
    now = timezone.now()
    review_round = review_round_of(locked) if locked.status == S.IN_REVIEW else None
    result, waiver = _latest_result(locked), None
    approved_at = expires_at = None
    in_force = approval_in_force(locked)
    if kind in ENABLING_KINDS:
        if locked.risk_tier == RiskTier.PROHIBITED:
            raise PolicyViolation(
                "A use case of the prohibited risk tier can never be approved.",
                code="prohibited_tier",
            )
        _check_not_requester(actor, result)
        if kind == DecisionKind.APPROVE and _content(locked) != {
            key: submission.snapshot[key]
            for key in ("use_case", "risk", "model_version")
        }:
            raise Conflict(
                "The use case no longer says what was submitted; it must be "
                "submitted again.",
                code="content_changed_since_submission",
            )
        if kind == DecisionKind.REINSTATE and (
            in_force is None or in_force.expires_at <= now
        ):
            raise Conflict(
                "The approval period is over; the use case expires and must be "
                "submitted again.",
                code="approval_period_over",
            )
        reusable: list[Waiver] = []
        if review_round is not None:
            reusable = list(
                Waiver.objects.filter(
                    decisions__review_round=review_round,
                    decisions__kind=DecisionKind.APPROVE,
                ).distinct()
            )
        elif in_force is not None and in_force.waiver is not None:
            reusable = [in_force.waiver]
        result, waiver = _check_evidence(
            actor=actor,
            use_case=locked,
            now=now,
            waiver_rule_ids=waiver_rule_ids,
            waiver_justification=waiver_justification,
            reusable=reusable,
        )
    approvals_before: list[int] = []
    if kind == DecisionKind.APPROVE:
        approvals = Decision.objects.filter(
            review_round=review_round, kind=DecisionKind.APPROVE
        )
        if approvals.filter(reviewer=actor).exists():
            raise _refuse(
                "four_eyes_second_reviewer",
                "You already approved in this review round; a high-risk use case "
                "needs its second approval from another reviewer.",
            )
        approvals_before = list(approvals.values_list("reviewer_id", flat=True))
        needed = HIGH_TIER_APPROVALS if locked.risk_tier == RiskTier.HIGH else 1
        if len(approvals_before) + 1 < needed:
            target = locked.status  # recorded; the round stays open
    if target == S.APPROVED:
        approved_at = now
        if kind == DecisionKind.APPROVE:
            expires_at = approval_expiry(valid_until=locked.valid_until, now=now)
        else:
            expires_at = in_force.expires_at
    decision = Decision.objects.create(
        use_case=locked,
        submission=submission,
        review_round=review_round,
        model_version=locked.model_version,
        artifact_digest=locked.model_version.artifact_digest,
        kind=kind,
        reviewer=actor,
        rationale=rationale,
        policy_result=result,
        waiver=waiver,
        from_status=locked.status,
        to_status=target,
        decided_at=now,
        approved_at=approved_at,
        expires_at=expires_at,
    )
    attestation = attestation_for_decision(decision=decision)
    from_status = locked.status
    moved = target != from_status
    if moved:
        _move(
            locked,
            to_status=target,
            actor=actor,
            now=now,
            reason=rationale,
            submission=submission,
            decision=decision,
        )
    published = False
    if kind == DecisionKind.APPROVE and target == S.APPROVED:
        published = registry_services.model_publish(
            actor=actor,
            model=locked.model_version.model,
            reason=f"use case {locked.pk} approved (decision {decision.pk})",
        )
    audit.record(
        actor=actor,
        action=DECISION_EVENTS[kind] if moved else "use_case.approval_recorded",
        obj=locked,
        agency=locked.agency,
        payload={
            "use_case_id": locked.pk,
            "decision_id": decision.pk,
            "kind": kind,
            "from": from_status,
            "to": target,
            "submission_id": submission.pk,
            "model_version_id": locked.model_version_id,
            "artifact_sha256": decision.artifact_digest,
            "policy_result_id": result.pk if result else None,
            "waiver": None
            if waiver is None
            else {
                "id": waiver.pk,
                "rule_ids": waiver.rule_ids,
                "justification": waiver.justification,
                "granted_by": audit.actor_label_of(waiver.granted_by),
            },
            "rationale": rationale,
            "approvals_in_round": len(approvals_before) + 1
            if kind == DecisionKind.APPROVE
            else None,
            "approved_at": approved_at,
            "expires_at": expires_at,
            "model_published": published,
            "attestation_id": attestation.pk,
            "statement_sha256": attestation.statement_sha256,
        },
    )
    return decision


@transaction.atomic
def use_case_approve(
    *,
    actor,
    use_case: UseCase,
    rationale: str,
    waiver_rule_ids: list[str] | None = None,
    waiver_justification: str = "",
) -> Decision:
    """Approve a use case in review for the version it names.

    Needs the latest policy result, about the current artifact digest, to
    pass, or a waiver of every failed rule (``waiver_rule_ids`` as
    ``policy/rule`` or a bare rule id, and a justification of at least
    ``WAIVER_MIN_JUSTIFICATION`` characters); a second approver of a
    high-risk case may rely on the first approver's waiver of the same
    result. ``prohibited`` is never approved (``PolicyViolation``). The four
    eyes rules apply. A ``high`` case's first approval is recorded
    (``use_case.approval_recorded``) and leaves it in review; the second, by
    another reviewer, approves it. Approving sets ``approved_at`` and
    ``expires_at`` (``approval_expiry``) on the decision and makes the model
    public. Raises ``InvalidTransition`` unless in review.
    """
    return _decide(
        actor=actor,
        use_case=use_case,
        kind=DecisionKind.APPROVE,
        rationale=rationale,
        waiver_rule_ids=waiver_rule_ids,
        waiver_justification=waiver_justification,
    )


@transaction.atomic
def use_case_request_changes(*, actor, use_case: UseCase, rationale: str) -> Decision:
    """Send a use case in review back to its agency, saying what must change.

    Ends the review round (approvals recorded in it no longer count). The
    agency edits and submits again. Raises ``InvalidTransition`` unless in
    review; the reviewer rules apply.
    """
    return _decide(
        actor=actor,
        use_case=use_case,
        kind=DecisionKind.REQUEST_CHANGES,
        rationale=rationale,
    )


@transaction.atomic
def use_case_reject(*, actor, use_case: UseCase, rationale: str) -> Decision:
    """Refuse a use case in review for good (``rejected`` is final).

    Raises ``InvalidTransition`` unless in review; the reviewer rules apply.
    """
    return _decide(
        actor=actor, use_case=use_case, kind=DecisionKind.REJECT, rationale=rationale
    )


@transaction.atomic
def use_case_suspend(*, actor, use_case: UseCase, rationale: str) -> Decision:
    """Take an approved use case out of service until reinstated or retired.

    Raises ``InvalidTransition`` unless approved; the reviewer rules apply.
    """
    return _decide(
        actor=actor, use_case=use_case, kind=DecisionKind.SUSPEND, rationale=rationale
    )


@transaction.atomic
def use_case_reinstate(
    *,
    actor,
    use_case: UseCase,
    rationale: str,
    waiver_rule_ids: list[str] | None = None,
    waiver_justification: str = "",
) -> Decision:
    """Put a suspended use case back in service until its approval ends.

    The evidence and four-eyes rules of an approval apply (the waiver of
    the approval in force counts for the same policy result); one reviewer
    suffices even for ``high``, since it restores an approval that had two.
    Keeps the ``expires_at`` of the approval in force; ``Conflict``
    ``approval_period_over`` once that has passed. Raises
    ``InvalidTransition`` unless suspended.
    """
    return _decide(
        actor=actor,
        use_case=use_case,
        kind=DecisionKind.REINSTATE,
        rationale=rationale,
        waiver_rule_ids=waiver_rule_ids,
        waiver_justification=waiver_justification,
    )


@transaction.atomic
def use_case_retire(*, actor, use_case: UseCase, rationale: str) -> Decision:
    """Retire a use case for good: from approved, suspended or expired.

    Nothing is deleted (legal hold): the record stays, the use case leaves
    service. Raises ``InvalidTransition`` from other states; the reviewer
    rules apply.
    """
    return _decide(
        actor=actor, use_case=use_case, kind=DecisionKind.RETIRE, rationale=rationale
    )


# --- the platform's own moves -----------------------------------------------------


@transaction.atomic
def use_case_expire(*, use_case: UseCase, now: datetime | None = None) -> bool:
    """Expire an approved or suspended use case whose approval has ended.

    The platform acts (no actor). True if it expired now; False when the
    approval in force still runs at ``now`` or the status moved meanwhile
    (safe to call twice). Records ``use_case.expired``.
    """
    now = now or timezone.now()
    locked = _lock(use_case)
    if locked.status not in TRANSITIONS["expire"][0]:
        return False
    approval = approval_in_force(locked)
    if approval is None or approval.expires_at > now:
        return False
    from_status = locked.status
    _move(
        locked,
        to_status=S.EXPIRED,
        actor=None,
        now=now,
        reason=f"The approval given by decision {approval.pk} ended at "
        f"{approval.expires_at.isoformat()}.",
    )
    audit.record(
        actor=None,
        action="use_case.expired",
        obj=locked,
        agency=locked.agency,
        payload={
            "use_case_id": locked.pk,
            "from": from_status,
            "to": S.EXPIRED,
            "decision_id": approval.pk,
            "expires_at": approval.expires_at,
        },
    )
    return True


def use_case_expire_due(*, now: datetime | None = None) -> int:
    """Expire every use case whose approval ended by ``now``; the count expired.

    Each in its own transaction, so one failure leaves the others done. Run
    by the ``civitas.usecase_expire`` periodic task.
    """
    now = now or timezone.now()
    ends = (
        Decision.objects.filter(use_case=OuterRef("pk"), expires_at__isnull=False)
        .order_by("-decided_at", "-id")
        .values("expires_at")[:1]
    )
    due = (
        UseCase.objects.filter(status__in=TRANSITIONS["expire"][0])
        .annotate(approval_ends=Subquery(ends))
        .filter(approval_ends__lte=now)
        .values_list("pk", flat=True)
    )
    return sum(use_case_expire(use_case=UseCase(pk=pk), now=now) for pk in list(due))


def _return_to_review(
    locked: UseCase, *, result: PolicyResult, failed: list[str], now: datetime
) -> None:
    """Move a locked approved use case back to review because ``result`` failed."""
    messages = {
        f"{o['policy']}/{o['rule_id']}": o["message"]
        for o in result.outcomes
        if o["status"] == RuleStatus.FAILED
    }
    reason = f"Policy result {result.pk} failed: " + " ".join(
        f"{rule}: {messages.get(rule, '')}" for rule in failed
    )
    transition = _move(
        locked,
        to_status=S.IN_REVIEW,
        actor=None,
        now=now,
        reason=reason,
        submission=_latest_submission(locked),
    )
    audit.record(
        actor=None,
        action="use_case.returned_to_review",
        obj=locked,
        agency=locked.agency,
        payload={
            "use_case_id": locked.pk,
            "from": S.APPROVED,
            "to": S.IN_REVIEW,
            "policy_result_id": result.pk,
            "trigger": result.trigger,
            "failed": failed,
            "reason": reason[:4000],
            "review_round_id": transition.pk,
        },
    )


@transaction.atomic
def use_case_recheck(*, use_case: UseCase, result: PolicyResult) -> bool:
    """Return an approved use case to review when its newest policy result fails.

    The newest result of the use case counts (``result`` or a later one).
    Rules waived by the approval in force for that same result do not
    count; any other failed rule (stale evidence, a regression below a
    bound, a licence that no longer fits) moves the use case to
    ``in_review``, opening a new review round, and records
    ``use_case.returned_to_review`` with the reason. True if it moved; False
    when not approved or nothing unwaived failed. Safe to call twice.
    """
    locked = _lock(use_case)
    if locked.status != S.APPROVED:
        return False
    latest = _latest_result(locked) or result
    if latest.passed:
        return False
    failed = _failed_rules(latest)
    approval = approval_in_force(locked)
    if (
        approval is not None
        and approval.waiver is not None
        and approval.waiver.policy_result_id == latest.pk
    ):
        failed = [rule for rule in failed if rule not in approval.waiver.rule_ids]
    if not failed:
        return False
    _return_to_review(locked, result=latest, failed=failed, now=timezone.now())
    return True


def use_case_recheck_enqueue(*, result: PolicyResult) -> bool:
    """Queue ``use_case_recheck`` for a failed result of an approved use case.

    The hook the policy engine calls after each evaluation-triggered check.
    The recheck runs after the caller commits, in a task of its own: it
    locks the use case, which must never happen while the evaluation's
    transaction holds the audit chain head (see the module docstring). True
    if queued.
    """
    if result.passed:
        return False
    if not UseCase.objects.filter(pk=result.use_case_id, status=S.APPROVED).exists():
        return False
    send_on_commit("civitas.usecase_recheck", policy_result_id=result.pk)
    return True


def evidence_fresh_until(result: PolicyResult | None) -> datetime | None:
    """When the first run a result relied on outgrows its rule's freshness limit.

    Read from the passed ``required_evaluation`` outcomes' evidence
    (``finished_at`` + ``max_age_days``); None when no rule sets a limit.
    """
    if result is None:
        return None
    limits = []
    for outcome in result.outcomes:
        evidence = outcome.get("evidence") or {}
        if (
            outcome.get("kind") != "required_evaluation"
            or outcome.get("status") != RuleStatus.PASSED
            or not evidence.get("max_age_days")
            or not evidence.get("finished_at")
        ):
            continue
        finished = parse_datetime(evidence["finished_at"])
        if finished is not None:
            limits.append(finished + timedelta(days=evidence["max_age_days"]))
    return min(limits) if limits else None


def use_case_recheck_stale(*, now: datetime | None = None) -> int:
    """Re-check approved use cases whose evidence outgrew its freshness limit.

    For each approved use case whose newest policy result relied on a run
    that is now older than its rule allows, the policy engine runs again
    (trigger ``on_demand``, by the platform) and ``use_case_recheck`` acts
    on the verdict, in one transaction per use case with the use case
    locked first. Returns how many went back to review. Run by the
    ``civitas.usecase_recheck_stale`` periodic task.
    """
    from governance.usecase_services import policy_evaluate

    now = now or timezone.now()
    returned = 0
    approved = UseCase.objects.filter(status=S.APPROVED).order_by("pk")
    for use_case in approved.iterator():
        fresh_until = evidence_fresh_until(_latest_result(use_case))
        if fresh_until is None or fresh_until > now:
            continue
        with transaction.atomic():
            locked = _lock(use_case)
            if locked.status != S.APPROVED:
                continue
            result = policy_evaluate(
                use_case=locked, trigger=PolicyTrigger.ON_DEMAND, actor=None
            )
            returned += use_case_recheck(use_case=locked, result=result)
    return returned


# --- what was in service when --------------------------------------------------


@dataclass(frozen=True)
class InService:
    """One use case in service at an instant, under the approval then in force."""

    use_case: UseCase
    model_version: ModelVersion
    decision: Decision
    approved_at: datetime
    expires_at: datetime


def in_service_on(
    when: datetime, *, use_cases: QuerySet[UseCase] | None = None
) -> list[InService]:
    """Which versions were approved for which use cases at the instant ``when``.

    Computed from the recorded history, not the current state: a use case
    was in service if its last transition at or before ``when`` led to
    ``approved`` and the approval then in force (the last approving or
    reinstating decision at or before ``when``) had not yet expired.
    ``use_cases`` narrows the answer (e.g. to what a caller may see).
    Raises ValueError for a naive ``when``.
    """
    if timezone.is_naive(when):
        raise ValueError("'when' must be an aware datetime")
    use_cases = UseCase.objects.all() if use_cases is None else use_cases
    status_then = (
        UseCaseTransition.objects.filter(use_case=OuterRef("pk"), created_at__lte=when)
        .order_by("-created_at", "-id")
        .values("to_status")[:1]
    )
    approval_then = (
        Decision.objects.filter(
            use_case=OuterRef("pk"), decided_at__lte=when, expires_at__isnull=False
        )
        .order_by("-decided_at", "-id")
        .values("pk")[:1]
    )
    decision_ids = (
        use_cases.annotate(
            status_then=Subquery(status_then), approval_then=Subquery(approval_then)
        )
        .filter(status_then=S.APPROVED, approval_then__isnull=False)
        .values_list("approval_then", flat=True)
    )
    decisions = (
        Decision.objects.filter(pk__in=list(decision_ids), expires_at__gt=when)
        .select_related("use_case__agency", "model_version__model__agency", "reviewer")
        .order_by("use_case_id")
    )
    return [
        InService(
            use_case=decision.use_case,
            model_version=decision.model_version,
            decision=decision,
            approved_at=decision.approved_at,
            expires_at=decision.expires_at,
        )
        for decision in decisions
    ]
