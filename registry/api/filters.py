"""Query filters of the catalogue API (django-filter).

Filters narrow a queryset the selectors already limited to what the caller
may read, so no filter can reach another agency's private rows (SECURITY C2).
Id filters match only through related objects the caller may read and never
tell an unseen id from an unused one (SECURITY C13, ``config.filters``).
Jurisdictions compare case-insensitively; a licence filter takes any
spelling of an SPDX expression (``apache-2.0 or mit``) and matches the
normalised one, answering 400 for an invalid expression.
"""

from __future__ import annotations

from django import forms
from django.db.models import Exists, OuterRef, Q, QuerySet
from django_filters import rest_framework as filters

from config.filters import FilterSet, IdFilter, IntegerFilter, JSONListFilter
from registry import licences
from registry.models import (
    Agency,
    AIModel,
    ArtifactState,
    Dataset,
    DatasetVersion,
    Licence,
    Membership,
    ModelKind,
    ModelVersion,
    PersonalData,
    Role,
    Task,
    VersionStatus,
    Visibility,
)


class LicenceExpressionFormField(forms.CharField):
    """A form field that normalises an SPDX expression or refuses it."""

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return value
        try:
            return licences.normalise(value)
        except licences.LicenceExpressionError as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from exc


class LicenceExpressionFilter(filters.CharFilter):
    """Match a licence by its normalised SPDX expression."""

    field_class = LicenceExpressionFormField

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("lookup_expr", "iexact")
        super().__init__(*args, **kwargs)


class AgencyFilter(FilterSet):
    """Filters of the agency list."""

    jurisdiction = filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = Agency
        fields = ["jurisdiction", "is_oversight_body"]


class MembershipFilter(FilterSet):
    """Filters of an agency's people."""

    role = filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["role"]


class LicenceFilter(FilterSet):
    """Filters of the licence list."""

    expression = LicenceExpressionFilter()
    spdx_id = JSONListFilter(
        field_name="spdx_ids",
        label="SPDX identifier (any case)",
        pattern=r"[A-Za-z0-9.+:-]{1,100}",
        message="Not an SPDX licence identifier.",
    )

    class Meta:
        model = Licence
        fields = [
            "expression",
            "spdx_id",
            "is_osi_approved",
            "allows_commercial_use",
            "allows_derivatives",
            "requires_share_alike",
        ]


class DatasetFilter(FilterSet):
    """Filters of the dataset list."""

    agency = filters.CharFilter(field_name="agency__slug")
    visibility = filters.ChoiceFilter(choices=Visibility.choices)
    personal_data = filters.ChoiceFilter(
        choices=PersonalData.choices,
        method="filter_personal_data",
        label="has a version with this personal-data status",
    )

    class Meta:
        model = Dataset
        fields = ["agency", "visibility", "personal_data"]

    def filter_personal_data(self, queryset: QuerySet, name: str, value: str):
        """Datasets with at least one version of this personal-data status."""
        versions = DatasetVersion.objects.filter(
            dataset=OuterRef("pk"), personal_data=value
        )
        return queryset.filter(Exists(versions))


class DatasetVersionFilter(FilterSet):
    """Filters of the dataset-version list."""

    agency = filters.CharFilter(field_name="dataset__agency__slug")
    dataset = IdFilter(field_name="dataset")
    licence = LicenceExpressionFilter(field_name="licence__expression")
    personal_data = filters.ChoiceFilter(choices=PersonalData.choices)
    origin_jurisdiction = filters.CharFilter(lookup_expr="iexact")
    jurisdiction = filters.CharFilter(
        field_name="origin_jurisdiction", lookup_expr="iexact"
    )
    language = JSONListFilter(
        field_name="languages",
        label="BCP 47 tag (any case)",
        pattern=r"[A-Za-z0-9]{1,8}(?:-[A-Za-z0-9]{1,8})*",
        message="Not a BCP 47 language tag.",
    )
    artifact_state = filters.ChoiceFilter(choices=ArtifactState.choices)

    class Meta:
        model = DatasetVersion
        fields = [
            "agency",
            "dataset",
            "licence",
            "personal_data",
            "origin_jurisdiction",
            "jurisdiction",
            "language",
            "artifact_state",
        ]


class ModelFilter(FilterSet):
    """Filters of the model list."""

    agency = filters.CharFilter(field_name="agency__slug")
    task = filters.ChoiceFilter(choices=Task.choices)
    visibility = filters.ChoiceFilter(choices=Visibility.choices)
    domain = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = AIModel
        fields = ["agency", "task", "visibility", "domain"]


class ModelVersionFilter(FilterSet):
    """Filters of the model-version list."""

    agency = filters.CharFilter(field_name="model__agency__slug")
    model = IdFilter(field_name="model")
    task = filters.ChoiceFilter(field_name="model__task", choices=Task.choices)
    visibility = filters.ChoiceFilter(
        field_name="model__visibility", choices=Visibility.choices
    )
    status = filters.ChoiceFilter(choices=VersionStatus.choices)
    licence = LicenceExpressionFilter(field_name="licence__expression")
    hosting_jurisdiction = filters.CharFilter(lookup_expr="iexact")
    training_jurisdiction = filters.CharFilter(lookup_expr="iexact")
    jurisdiction = filters.CharFilter(
        method="filter_jurisdiction", label="hosting or training jurisdiction"
    )
    parameter_count_min = IntegerFilter(
        field_name="parameter_count", lookup_expr="gte", min_value=0
    )
    parameter_count_max = IntegerFilter(
        field_name="parameter_count", lookup_expr="lte", min_value=0
    )
    kind = filters.ChoiceFilter(choices=ModelKind.choices)
    artifact_state = filters.ChoiceFilter(choices=ArtifactState.choices)
    released = filters.BooleanFilter(method="filter_released")
    base_version = IdFilter(field_name="base_version")
    dataset_version = IdFilter(
        field_name="dataset_links__dataset_version",
        label="linked dataset version id",
    )

    class Meta:
        model = ModelVersion
        fields = [
            "agency",
            "model",
            "task",
            "visibility",
            "status",
            "licence",
            "hosting_jurisdiction",
            "training_jurisdiction",
            "jurisdiction",
            "parameter_count_min",
            "parameter_count_max",
            "kind",
            "artifact_state",
            "released",
            "base_version",
            "dataset_version",
        ]

    def filter_jurisdiction(self, queryset: QuerySet, name: str, value: str):
        """Versions hosted or trained in this jurisdiction."""
        return queryset.filter(
            Q(hosting_jurisdiction__iexact=value)
            | Q(training_jurisdiction__iexact=value)
        )

    def filter_released(self, queryset: QuerySet, name: str, value: bool):
        """Released (frozen) versions, or those still open to edits."""
        return queryset.filter(released_at__isnull=not value)
