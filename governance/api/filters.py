"""Filter sets of the governance API's list endpoints.

Id filters match only through related objects the caller may read and never
tell an unseen id from an unused one (SECURITY C13, ``config.filters``); the
foreign keys of a view's ``filterset_fields`` get the same ``IdFilter``.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django_filters import rest_framework as filters

from config.filters import FilterSet, IdFilter
from governance.models import (
    Decision,
    DecisionKind,
    EvaluationRun,
    EvaluationSuite,
    Policy,
    PolicyResult,
    PolicyScope,
    PolicyTrigger,
    RiskTier,
    UseCase,
    UseCaseStatus,
)


class UseCaseFilter(FilterSet):
    agency = filters.CharFilter(field_name="agency__slug")
    model_version = IdFilter(field_name="model_version")
    status = filters.ChoiceFilter(choices=UseCaseStatus.choices)
    risk_tier = filters.ChoiceFilter(choices=RiskTier.choices)

    class Meta:
        model = UseCase
        fields = ["agency", "model_version", "status", "risk_tier"]


class PolicyResultFilter(FilterSet):
    use_case = IdFilter(field_name="use_case")
    model_version = IdFilter(field_name="model_version")
    trigger = filters.ChoiceFilter(choices=PolicyTrigger.choices)

    class Meta:
        model = PolicyResult
        fields = ["use_case", "model_version", "trigger", "passed"]


class PolicyFilter(FilterSet):
    agency = filters.CharFilter(field_name="agency__slug")
    scope = filters.ChoiceFilter(choices=PolicyScope.choices)
    risk_tier = filters.ChoiceFilter(choices=RiskTier.choices)

    class Meta:
        model = Policy
        fields = ["name", "scope", "agency", "risk_tier", "is_active"]


class DecisionFilter(FilterSet):
    use_case = IdFilter(field_name="use_case")
    model_version = IdFilter(field_name="model_version")
    kind = filters.ChoiceFilter(choices=DecisionKind.choices)
    agency = filters.CharFilter(field_name="use_case__agency__slug")

    class Meta:
        model = Decision
        fields = ["use_case", "model_version", "kind", "agency"]


class EvaluationRunFilter(FilterSet):
    suite = filters.CharFilter(method="filter_suite", label="suite name")
    model_version = IdFilter(field_name="model_version")
    agency = filters.CharFilter(field_name="model_version__model__agency__slug")

    class Meta:
        model = EvaluationRun
        fields = ["status", "suite", "model_version", "agency"]

    def filter_suite(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Runs of a suite of this name that the caller may see."""
        suites = EvaluationSuite.objects.visible_to(self.request.user)
        return queryset.filter(suite__in=suites.filter(name=value).values("pk"))
