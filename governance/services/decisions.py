"""Reviewers' decisions on use cases: approve, reinstate, reject, suspend, retire.

See ``governance.services.lifecycle`` for the states and the four-eyes rules.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from config.exceptions import Conflict, DomainError, PolicyViolation
from governance.federation.services import is_imported
from governance.models import (
    Decision,
    DecisionKind,
    PolicyResult,
    RiskTier,
    Submission,
    UseCase,
    UseCaseTransition,
    Waiver,
)
from governance.selectors import (
    approval_in_force,
    failed_rule_ids,
    latest_policy_result,
    latest_submission,
    review_round_of,
    waiver_uncovered_rules,
)
from governance.services.approvals import use_case_schedules_sync
from governance.services.attestations import attestation_for_decision
from governance.services.lifecycle import (
    DECISION_ACTIONS,
    DECISION_EVENTS,
    ENABLING_KINDS,
    HIGH_TIER_APPROVALS,
    RATIONALE_MAX_LENGTH,
    RATIONALE_MIN_LENGTH,
    TRANSITIONS,
    WAIVER_MAX_JUSTIFICATION,
    WAIVER_MIN_JUSTIFICATION,
    S,
    _check_not_requester,
    _check_not_submitter,
    _check_reviewer,
    _check_transition,
    _content,
    _lock,
    _move,
    _refuse,
    _text,
)
from governance.services.outbox import decision_owed
from registry import services as registry_services


def approval_expiry(*, valid_until: date, now: datetime) -> datetime:
    """When an approval given at ``now`` ends.

    The earlier of the end of the use case's last valid day (in
    ``TIME_ZONE``) and ``now`` plus ``CIVITAS_APPROVAL_DAYS``.
    """
    zone = timezone.get_default_timezone()
    end_of_validity = datetime.combine(valid_until + timedelta(days=1), time.min, zone)
    return min(end_of_validity, now + timedelta(days=settings.CIVITAS_APPROVAL_DAYS))


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


def _reused_waiver(
    result: PolicyResult,
    failed: list[str],
    reusable: list[Waiver],
    in_force_waiver: Waiver | None,
) -> Waiver | None:
    """A waiver already given that covers every failed rule of ``result``.

    One of ``reusable`` given on this very result, else the waiver of the
    approval in force while its measured values are no worse than waived.
    """
    for waiver in reusable:
        if waiver.policy_result_id == result.pk and set(waiver.rule_ids) >= set(failed):
            return waiver
    if in_force_waiver is not None:
        uncovered, _ = waiver_uncovered_rules(
            in_force_waiver, result=result, failed=failed
        )
        if not uncovered:
            return in_force_waiver
    return None


def _check_evidence(
    *,
    actor,
    use_case: UseCase,
    now: datetime,
    waiver_rule_ids: list[str] | None,
    waiver_justification: str,
    reusable: list[Waiver],
    in_force_waiver: Waiver | None = None,
) -> tuple[PolicyResult, Waiver | None]:
    """The passing (or waived) latest policy result an approval relies on.

    The latest result must be about the version's current artifact digest
    (``Conflict`` ``policy_result_outdated`` otherwise). If it failed, every
    failed rule must be waived: by a waiver given now, by one in
    ``reusable`` on that very result, or by ``in_force_waiver`` (the waiver
    of the approval in force, which a reinstatement restores) for as long as
    the measured values are no worse than the waived ones. Raises ``PolicyViolation``
    ``policy_failed`` naming the rules left unwaived, ``DomainError`` for a
    waiver that is not needed, names unknown rules, or lacks a justification.
    """
    version = use_case.model_version
    result = latest_policy_result(use_case)
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
    failed = failed_rule_ids(result)
    if waiver_rule_ids is not None and not failed:
        raise DomainError(
            f"Policy result {result.pk} passed: there is nothing to waive.",
            code="waiver_not_needed",
            fields={"waiver": [{"code": "not_needed", "message": "Nothing failed."}]},
        )
    if not failed:
        return result, None
    if waiver_rule_ids is None:
        waiver = _reused_waiver(result, failed, reusable, in_force_waiver)
        if waiver is not None:
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


# --- decisions -----------------------------------------------------------------


def _check_enabling(
    *,
    actor,
    locked: UseCase,
    kind: str,
    submission: Submission,
    review_round: UseCaseTransition | None,
    in_force: Decision | None,
    now: datetime,
    waiver_rule_ids: list[str] | None,
    waiver_justification: str,
) -> tuple[PolicyResult, Waiver | None]:
    """The checks of a decision that puts a use case in service; its evidence.

    Never the prohibited tier; not by whoever requested the evidence; an
    approval only of what was submitted; a reinstatement only within the
    approval period; never a version imported from a federation peer. The
    evidence may rely on a waiver of an approval in this review round, or
    (outside a round) on the approval in force.
    """
    if locked.risk_tier == RiskTier.PROHIBITED:
        raise PolicyViolation(
            "A use case of the prohibited risk tier can never be approved.",
            code="prohibited_tier",
        )
    if is_imported(locked.model_version):
        raise PolicyViolation(
            "An imported version is approved by its own platform, not here.",
            code="imported_version",
        )
    _check_not_requester(actor, latest_policy_result(locked))
    if kind == DecisionKind.APPROVE and _content(locked) != {
        key: submission.snapshot[key] for key in ("use_case", "risk", "model_version")
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
    return _check_evidence(
        actor=actor,
        use_case=locked,
        now=now,
        waiver_rule_ids=waiver_rule_ids,
        waiver_justification=waiver_justification,
        reusable=reusable,
        in_force_waiver=None
        if review_round is not None or in_force is None
        else in_force.waiver,
    )


def _approval_round(
    actor, locked: UseCase, review_round: UseCaseTransition | None
) -> tuple[list[int], str]:
    """Who approved in the round before ``actor``, and where this approval leads.

    Refuses a second approval by the same reviewer. A high-risk case stays
    in review (the round open) until its second approval.
    """
    approvals = Decision.objects.filter(
        review_round=review_round, kind=DecisionKind.APPROVE
    )
    if approvals.filter(reviewer=actor).exists():
        raise _refuse(
            "four_eyes_second_reviewer",
            "You already approved in this review round; a high-risk use case "
            "needs its second approval from another reviewer.",
        )
    before = list(approvals.values_list("reviewer_id", flat=True))
    needed = HIGH_TIER_APPROVALS if locked.risk_tier == RiskTier.HIGH else 1
    if len(before) + 1 < needed:
        return before, locked.status  # recorded; the round stays open
    return before, TRANSITIONS["approve"][1]


def _publish(actor, locked: UseCase, decision: Decision) -> bool:
    """Make the model public once an approval puts the use case in service."""
    if decision.to_status != S.APPROVED:
        return False
    return registry_services.model_publish(
        actor=actor,
        model=locked.model_version.model,
        reason=f"use case {locked.pk} approved (decision {decision.pk})",
    )


def _record_decision(
    *,
    actor,
    locked: UseCase,
    decision: Decision,
    attestation,
    from_status: str,
    approvals_before: list[int],
    published: bool,
) -> None:
    """Record the audit event of a decision (moved or only recorded)."""
    waiver = decision.waiver
    moved = decision.to_status != from_status
    event = audit.record(
        actor=actor,
        action=DECISION_EVENTS[decision.kind]
        if moved
        else "use_case.approval_recorded",
        obj=locked,
        agency=locked.agency,
        payload={
            "use_case_id": locked.pk,
            "decision_id": decision.pk,
            "kind": decision.kind,
            "from": from_status,
            "to": decision.to_status,
            "submission_id": decision.submission_id,
            "model_version_id": locked.model_version_id,
            "artifact_sha256": decision.artifact_digest,
            "policy_result_id": decision.policy_result_id,
            "waiver": None
            if waiver is None
            else {
                "id": waiver.pk,
                "rule_ids": waiver.rule_ids,
                "justification": waiver.justification,
                "granted_by": audit.actor_label_of(waiver.granted_by),
            },
            "rationale": decision.rationale,
            "approvals_in_round": len(approvals_before) + 1
            if decision.kind == DecisionKind.APPROVE
            else None,
            "approved_at": decision.approved_at,
            "expires_at": decision.expires_at,
            "model_published": published,
            "attestation_id": attestation.pk,
            "statement_sha256": attestation.statement_sha256,
        },
        wait=True,  # MLflow's tag below names the event's seq and hash
    )
    decision_owed(
        decision_id=decision.pk,
        model_version_id=locked.model_version_id,
        tag={
            "kind": decision.kind,
            "to": decision.to_status,
            "audit_seq": str(event.seq),
            "audit_hash": event.hash,
        },
    )


def _checked_input(kind: str, rationale: str, waiver_rule_ids) -> str:
    """The stripped rationale; ``DomainError`` for a bad one or a misplaced waiver."""
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
    return rationale


def _approval_period(
    locked: UseCase,
    *,
    kind: str,
    target: str,
    now: datetime,
    in_force: Decision | None,
) -> tuple[datetime | None, datetime | None]:
    """``approved_at`` and ``expires_at`` of a decision that approves, else None.

    An approval runs until ``approval_expiry``; a reinstatement keeps the
    end of the approval in force.
    """
    if target != S.APPROVED:
        return None, None
    if kind == DecisionKind.APPROVE:
        return now, approval_expiry(valid_until=locked.valid_until, now=now)
    return now, in_force.expires_at


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
    rationale = _checked_input(kind, rationale, waiver_rule_ids)
    submission = latest_submission(locked)
    _check_not_submitter(actor, submission)
    now = timezone.now()
    review_round = review_round_of(locked) if locked.status == S.IN_REVIEW else None
    result, waiver = latest_policy_result(locked), None
    in_force = approval_in_force(locked)
    if kind in ENABLING_KINDS:
        result, waiver = _check_enabling(
            actor=actor,
            locked=locked,
            kind=kind,
            submission=submission,
            review_round=review_round,
            in_force=in_force,
            now=now,
            waiver_rule_ids=waiver_rule_ids,
            waiver_justification=waiver_justification,
        )
    approvals_before: list[int] = []
    if kind == DecisionKind.APPROVE:
        approvals_before, target = _approval_round(actor, locked, review_round)
    approved_at, expires_at = _approval_period(
        locked, kind=kind, target=target, now=now, in_force=in_force
    )
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
    if target != from_status:
        _move(
            locked,
            to_status=target,
            actor=actor,
            now=now,
            reason=rationale,
            submission=submission,
            decision=decision,
        )
    published = kind == DecisionKind.APPROVE and _publish(actor, locked, decision)
    _record_decision(
        actor=actor,
        locked=locked,
        decision=decision,
        attestation=attestation,
        from_status=from_status,
        approvals_before=approvals_before,
        published=published,
    )
    if target != from_status:  # fresh-evidence schedules follow the approval
        use_case_schedules_sync(use_case=locked, now=now)
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
