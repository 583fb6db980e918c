"""Reads of the governance app: review rounds, approvals, evidence, service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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
    Waiver,
)
from governance.rules.facts import readable_number
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


def _outcomes(result: PolicyResult) -> dict[str, dict[str, Any]]:
    """The outcomes of a policy result by ``policy/rule`` id."""
    return {f"{o['policy']}/{o['rule_id']}": o for o in result.outcomes}


def _measured(outcome: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """What a failed outcome measured: name -> (value, +1 if higher is worse).

    A required evaluation's metric (worse downwards when it fell below its
    ``min``, upwards when it rose above its ``max``); a size and cost rule's
    parameter count and energy per 1,000 tokens (worse upwards). Empty for
    rules that measure nothing (licences, jurisdictions, documentation) and
    for stale evidence: a stale run is a new failure, not the waived value.
    """
    evidence = outcome.get("evidence") or {}
    if evidence.get("stale"):
        return {}
    if outcome.get("kind") == "required_evaluation":
        value = evidence.get("value")
        if not isinstance(value, int | float):
            return {}
        below = "min" in evidence and value < evidence["min"]
        return {evidence.get("metric", "value"): (value, -1 if below else 1)}
    if outcome.get("kind") == "size_cost":
        return {
            key: (evidence[key], 1)
            for key in ("parameter_count", "energy_j_per_1k_tokens")
            if isinstance(evidence.get(key), int | float)
        }
    return {}


def waiver_uncovered_rules(
    waiver: Waiver | None, *, result: PolicyResult, failed: list[str]
) -> tuple[list[str], dict[str, str]]:
    """Which failed rules of ``result`` a waiver no longer covers, and why.

    A waiver holds for the rules it names as long as the approval carrying
    it is in force, unless the measured value got worse than the value that
    was waived (or is no longer measured, e.g. stale evidence, while the
    waived one was). Returns the failed rules left uncovered and, for each
    waived rule among them, a sentence naming the waived and the new value.
    """
    if waiver is None:
        return failed, {}
    waived_outcomes = _outcomes(waiver.policy_result)
    new_outcomes = _outcomes(result)
    uncovered, notes = [], {}
    for rule in failed:
        if rule not in waiver.rule_ids:
            uncovered.append(rule)
            continue
        then = _measured(waived_outcomes.get(rule, {}))
        now = _measured(new_outcomes.get(rule, {}))
        for name, (value, worse) in then.items():
            if name not in now:
                notes[rule] = (
                    f"The waiver {waiver.pk} covered {name} "
                    f"{readable_number(value)} (policy result "
                    f"{waiver.policy_result_id}); it is no longer measured."
                )
            elif (now[name][0] - value) * worse > 0:
                notes[rule] = (
                    f"{name} is now {readable_number(now[name][0])}, worse than "
                    f"the {readable_number(value)} waived by waiver {waiver.pk} "
                    f"(policy result {waiver.policy_result_id})."
                )
            else:
                continue
            uncovered.append(rule)
            break
    return uncovered, notes


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

    Read from the passed ``required_evaluation`` and ``required_suite``
    outcomes' evidence (``finished_at`` + ``max_age_days``); None when no
    rule sets a limit.
    """
    if result is None:
        return None
    limits = []
    for outcome in result.outcomes:
        evidence = outcome.get("evidence") or {}
        if (
            outcome.get("kind") not in ("required_evaluation", "required_suite")
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


# --- the agency dashboard (portal) ----------------------------------------------


def approvals_expiring(
    use_cases: QuerySet[UseCase], *, before: datetime
) -> QuerySet[UseCase]:
    """Approved use cases whose approval in force ends before ``before``.

    The approval in force is ``approval_in_force``'s, read for every use case
    in one query: each row is annotated with ``approval_expires_at``, soonest
    first.
    """
    in_force = Decision.objects.filter(
        use_case=OuterRef("pk"), expires_at__isnull=False
    ).order_by("-decided_at", "-id")
    return (
        use_cases.filter(status=S.APPROVED)
        .annotate(approval_expires_at=Subquery(in_force.values("expires_at")[:1]))
        .filter(approval_expires_at__lt=before)
        .select_related("agency", "model_version__model")
        .order_by("approval_expires_at", "pk")
    )


def latest_policy_failures(use_cases: QuerySet[UseCase]) -> QuerySet[PolicyResult]:
    """The failed results among the latest policy result of each of ``use_cases``.

    Newest first, with the use case, its agency and the version; a use case
    whose latest result passed is not listed, whatever failed before.
    """
    latest = (
        PolicyResult.objects.filter(use_case=OuterRef("pk"))
        .order_by("-created_at", "-id")
        .values("pk")[:1]
    )
    ids = use_cases.order_by().annotate(latest=Subquery(latest)).values("latest")
    return (
        PolicyResult.objects.filter(pk__in=ids, passed=False)
        .select_related("use_case__agency", "model_version__model")
        .order_by("-created_at", "-id")
    )
