"""The lifecycle of a use case: its states, submission and review.

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

Submission and review are here; the reviewers' decisions are in
``decisions``, the platform's own moves (expiry, return to review) in
``approvals``, the reads (review rounds, approvals in force, what was in
service when) in ``governance.selectors``.

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
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.verify import canonical_json, canonical_value
from config.exceptions import Conflict, DomainError, InvalidTransition, PolicyViolation
from governance.models import (
    Decision,
    DecisionKind,
    EvaluationRun,
    PolicyResult,
    PolicyTrigger,
    Submission,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
)
from governance.selectors import (
    latest_submission,
)
from governance.services.attestations import evidence_run_ids
from governance.services.outbox import model_version_owed
from governance.services.policies import policy_evaluate
from registry import services as registry_services
from registry.models import ArtifactState, ModelVersion, Role, VersionStatus
from registry.selectors import user_agency_id, user_role

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

    before = use_case.model_version.status
    after = registry_services.model_version_status_sync(
        actor=actor,
        version=use_case.model_version,
        status=target,
        detail=lambda: {"use_case_statuses": statuses},
    )
    if after != before:
        # The status tag and alias in MLflow follow, through the outbox.
        model_version_owed(version_id=version_id)


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


# --- submission and review -------------------------------------------------------


def _check_submittable(actor, locked: UseCase) -> None:
    """Who may submit, and what a submission needs; refuses otherwise."""
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
    locked = _lock(use_case)
    target = _check_transition(locked, "submit")
    _check_submittable(actor, locked)
    version = locked.model_version
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
    submission = latest_submission(locked)
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
