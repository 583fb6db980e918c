"""Filter sets of the governance API's list endpoints."""

from __future__ import annotations

from django_filters import rest_framework as filters

from governance.models import (
    Decision,
    DecisionKind,
    EvaluationRun,
    Policy,
    PolicyResult,
    PolicyScope,
    PolicyTrigger,
    RiskTier,
    UseCase,
    UseCaseStatus,
)


class UseCaseFilter(filters.FilterSet):
    agency = filters.CharFilter(field_name="agency__slug")
    model_version = filters.NumberFilter(field_name="model_version_id")
    status = filters.ChoiceFilter(choices=UseCaseStatus.choices)
    risk_tier = filters.ChoiceFilter(choices=RiskTier.choices)

    class Meta:
        model = UseCase
        fields = ["agency", "model_version", "status", "risk_tier"]


class PolicyResultFilter(filters.FilterSet):
    use_case = filters.NumberFilter(field_name="use_case_id")
    model_version = filters.NumberFilter(field_name="model_version_id")
    trigger = filters.ChoiceFilter(choices=PolicyTrigger.choices)

    class Meta:
        model = PolicyResult
        fields = ["use_case", "model_version", "trigger", "passed"]


class PolicyFilter(filters.FilterSet):
    agency = filters.CharFilter(field_name="agency__slug")
    scope = filters.ChoiceFilter(choices=PolicyScope.choices)
    risk_tier = filters.ChoiceFilter(choices=RiskTier.choices)

    class Meta:
        model = Policy
        fields = ["name", "scope", "agency", "risk_tier", "is_active"]


class DecisionFilter(filters.FilterSet):
    use_case = filters.NumberFilter(field_name="use_case_id")
    model_version = filters.NumberFilter(field_name="model_version_id")
    kind = filters.ChoiceFilter(choices=DecisionKind.choices)
    agency = filters.CharFilter(field_name="use_case__agency__slug")

    class Meta:
        model = Decision
        fields = ["use_case", "model_version", "kind", "agency"]


class EvaluationRunFilter(filters.FilterSet):
    suite = filters.CharFilter(field_name="suite__name")
    model_version = filters.NumberFilter(field_name="model_version_id")
    agency = filters.CharFilter(field_name="model_version__model__agency__slug")

    class Meta:
        model = EvaluationRun
        fields = ["status", "suite", "model_version", "agency"]
