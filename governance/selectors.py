"""Reads of the governance app: review rounds, approvals, evidence, service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from config.exceptions import Conflict
from governance.models import (
    Decision,
    PolicyResult,
    RuleStatus,
    Submission,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
)
from registry.models import ModelVersion

S = UseCaseStatus


def latest_submission(use_case: UseCase) -> Submission:
    submission = use_case.submissions.order_by("-number").first()
    if submission is None:  # pragma: no cover - every reviewed case was submitted
        raise Conflict("The use case was never submitted.", code="not_submitted")
    return submission


def latest_policy_result(use_case: UseCase) -> PolicyResult | None:
    return (
        PolicyResult.objects.filter(use_case_id=use_case.pk)
        .order_by("-created_at", "-id")
        .first()
    )


def failed_rule_ids(result: PolicyResult) -> list[str]:
    """The ``policy/rule`` ids a policy result failed, sorted."""
    return sorted({f"{policy}/{rule}" for policy, rule in result.failed_rules()})


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
