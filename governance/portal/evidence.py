"""The evidence a reviewer reads beside the decision form, in a fixed number of queries.

One function, ``review_evidence``, gathers everything the review page shows
about one use case: its latest submission, the latest policy result rule by
rule, the model version's datasets and licences, its latest evaluation
results, the waivers, the decision history and the approvals of the current
review round. Reads only, through the same selectors the services use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch

from governance.models import (
    Decision,
    DecisionKind,
    EvaluationRun,
    PolicyResult,
    RiskTier,
    RunMetric,
    RunStatus,
    Submission,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
    Waiver,
)
from governance.portal.readable import (
    policy_outcome_rows,
    questionnaire_answer_rows,
    risk_reason_rows,
)
from governance.selectors import failed_rule_ids
from governance.services.attestations import evidence_run_ids
from governance.services.lifecycle import HIGH_TIER_APPROVALS
from registry.models import ModelVersionDataset

LATEST_RUNS = 5


@dataclass
class ReviewEvidence:
    """What the review page shows about one use case."""

    use_case: UseCase
    submission: Submission | None
    result: PolicyResult | None
    failed_rules: list[str]
    datasets: list[ModelVersionDataset]
    runs: list[EvaluationRun]
    relied_on: set[int]
    waivers: list[Waiver]
    decisions: list[Decision]
    transitions: list[UseCaseTransition]
    round_approvals: list[Decision]
    approvals_needed: int
    rows: dict[str, Any] = field(default_factory=dict)

    @property
    def waiting_for_second(self) -> bool:
        """A high-risk case in review with its first approval recorded."""
        return (
            self.use_case.status == UseCaseStatus.IN_REVIEW
            and 0 < len(self.round_approvals) < self.approvals_needed
        )


def review_use_case(queryset, pk: int) -> UseCase:
    """The use case with what the page shows of it joined in (one query)."""
    return queryset.select_related(
        "agency",
        "questionnaire",
        "created_by",
        "assessed_by",
        "model_version__model__agency",
        "model_version__licence",
    ).get(pk=pk)


def _round_approvals(use_case: UseCase, transitions: list[UseCaseTransition]):
    """The approvals of the review round the latest move into review opened."""
    if use_case.status != UseCaseStatus.IN_REVIEW:
        return []
    rounds = [t for t in transitions if t.to_status == UseCaseStatus.IN_REVIEW]
    if not rounds:
        return []
    current = max(rounds, key=lambda t: t.pk)
    return list(
        Decision.objects.filter(review_round=current, kind=DecisionKind.APPROVE)
        .select_related("reviewer")
        .order_by("decided_at", "id")
    )


def review_evidence(use_case: UseCase) -> ReviewEvidence:
    """Gather the evidence of ``use_case`` (from ``review_use_case``)."""
    version = use_case.model_version
    submission = (
        Submission.objects.filter(use_case=use_case)
        .select_related("submitted_by")
        .order_by("-number")
        .first()
    )
    result = (
        PolicyResult.objects.filter(use_case=use_case)
        .order_by("-created_at", "-id")
        .first()
    )
    datasets = list(
        ModelVersionDataset.objects.filter(model_version=version).select_related(
            "dataset_version__dataset__agency", "dataset_version__licence"
        )
    )
    runs = list(
        EvaluationRun.objects.filter(model_version=version, status=RunStatus.SUCCEEDED)
        .select_related("suite", "requested_by")
        .prefetch_related(
            Prefetch("metrics", queryset=RunMetric.objects.order_by("task", "name"))
        )
        .order_by("-finished_at", "-id")[:LATEST_RUNS]
    )
    transitions = list(
        UseCaseTransition.objects.filter(use_case=use_case)
        .select_related("actor")
        .order_by("created_at", "id")
    )
    round_approvals = _round_approvals(use_case, transitions)
    evidence = ReviewEvidence(
        use_case=use_case,
        submission=submission,
        result=result,
        failed_rules=failed_rule_ids(result) if result is not None else [],
        datasets=datasets,
        runs=runs,
        relied_on=set(evidence_run_ids(result)),
        waivers=list(
            Waiver.objects.filter(use_case=use_case)
            .select_related("granted_by")
            .order_by("-granted_at", "-id")
        ),
        decisions=list(
            Decision.objects.filter(use_case=use_case)
            .select_related("reviewer", "waiver")
            .order_by("decided_at", "id")
        ),
        transitions=transitions,
        round_approvals=round_approvals,
        approvals_needed=HIGH_TIER_APPROVALS
        if use_case.risk_tier == RiskTier.HIGH
        else 1,
    )
    evidence.rows = {
        "outcome_rows": policy_outcome_rows(result) if result is not None else [],
        "reason_rows": risk_reason_rows(use_case),
        "answer_rows": questionnaire_answer_rows(use_case),
    }
    return evidence
