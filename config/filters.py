"""The API's filter backends: a value no filter can read answers 400, never nothing.

django-filter already refuses a value its form field rejects (``?status=nope``
on a choice filter), but a boolean filter reads anything it does not know
(``?released=maybe``) as "no filter", and DRF's ordering filter drops an
unknown ``ordering`` field; either way the caller got an unfiltered or
unordered list and no sign of the mistake. These backends answer 400 in the
API's error shape, with ``fields`` naming the query parameter. They are the
``DEFAULT_FILTER_BACKENDS`` of ``REST_FRAMEWORK``; a view that sets its own
backends uses these classes.

Integer filters (SECURITY C2, C13). Every filter on an integer column or an
id takes a whole number within the column's range, the same range on every
database (SQLite stores any 64-bit integer, PostgreSQL's ``integer`` does
not), and ids start at 1: ``1e30``, ``2**63``, ``-1`` or ``abc`` answer 400
naming the parameter before any query runs, and the schema states the range.
An id filter (``IdFilter``; every foreign key of ``filterset_fields``)
matches only rows whose related object the caller may see, and never checks
that the id exists: an id of another agency's private object and an id
never used both answer 200 with no rows, so a filter is no existence oracle.
"""

from __future__ import annotations

import json
import re

from django import forms
from django.core.exceptions import ImproperlyConfigured
from django.core.validators import RegexValidator
from django.db import models
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models.functions import Cast
from django_filters import filters as django_filters
from django_filters.constants import EMPTY_VALUES
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.rest_framework import FilterSet as RestFilterSet
from django_filters.utils import get_model_field
from drf_spectacular.contrib.django_filters import DjangoFilterExtension
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.filters import OrderingFilter

# Django's ranges for PostgreSQL-sized columns, used on every database.
_RANGES = BaseDatabaseOperations.integer_field_ranges
ID_RANGE = (1, _RANGES["BigAutoField"][1])


def _error(message: str) -> list[ErrorDetail]:
    return [ErrorDetail(message, code="invalid")]


def column_range(field) -> tuple[int, int] | None:
    """The values an integer model field (or a relation to one) can hold."""
    if getattr(field, "is_relation", False):
        field = getattr(field, "target_field", None)
    if not isinstance(field, models.Field):
        return None
    low, high = _RANGES.get(field.get_internal_type(), (None, None))
    if low is None:
        return None
    if field.primary_key:
        low = max(low, 1)
    return low, high


def integer_bounds(filter_, model) -> tuple[int, int] | None:
    """The range an integer filter accepts, or None if it is not one."""
    bounds = getattr(filter_, "bounds", None)
    if bounds is not None:
        return bounds
    if not isinstance(
        filter_, django_filters.NumberFilter | django_filters.ModelChoiceFilter
    ):
        return None
    if filter_.method is not None or model is None:
        return None
    return column_range(get_model_field(model, filter_.field_name))


class IntegerFilter(django_filters.NumberFilter):
    """A whole number in the range of its column, or in ``min_value..max_value``."""

    field_class = forms.IntegerField

    def __init__(self, *args, min_value=None, max_value=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.min_value, self.max_value = min_value, max_value

    @property
    def bounds(self) -> tuple[int, int] | None:
        if self.min_value is None and self.max_value is None:
            return None
        low, high = _RANGES["BigIntegerField"]
        return (
            low if self.min_value is None else self.min_value,
            high if self.max_value is None else self.max_value,
        )


class IdFilter(IntegerFilter):
    """The id of a related object the caller may see (SECURITY C13).

    ``field_name`` is the relation (``use_case``, ``dataset_links__dataset_version``).
    Rows match when the related object has this id and is in
    ``queryset(request)`` or, by default, in the related model's
    ``objects.visible_to(user)``; a related model without ``visible_to``
    needs an explicit ``queryset``. Existence is never checked, so an id the
    caller cannot see answers exactly like one never used.
    """

    def __init__(self, *args, queryset=None, **kwargs) -> None:
        kwargs.setdefault("min_value", ID_RANGE[0])
        kwargs.setdefault("max_value", ID_RANGE[1])
        super().__init__(*args, **kwargs)
        self.visible = queryset

    def visible_queryset(self, request) -> models.QuerySet:
        if self.visible is not None:
            return self.visible(request)
        related = get_model_field(self.model, self.field_name).related_model
        queryset = related._default_manager.all()
        if not hasattr(queryset, "visible_to"):
            raise ImproperlyConfigured(
                f"IdFilter {self.field_name!r}: {related.__name__} has no "
                "visible_to(user); pass queryset=lambda request: ..."
            )
        return queryset.visible_to(request.user)

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        request = getattr(self.parent, "request", None)
        if request is None:
            return qs.none()
        ids = self.visible_queryset(request).filter(pk=value).values("pk")
        if "__" not in self.field_name:
            return qs.filter(**{f"{self.field_name}__in": ids})
        # A multi-valued path would repeat a row once per matching link.
        through = qs.model._default_manager.filter(**{f"{self.field_name}__in": ids})
        return qs.filter(pk__in=through.values("pk"))


class JSONListFilter(django_filters.CharFilter):
    """Rows whose JSON list of strings holds this value, case-insensitively.

    SQLite has no ``contains`` on JSON, so the list's JSON text is searched
    for the value's JSON text (``"en"`` with its quotes: ``["en-GB"]`` does
    not match ``en``), which both databases do alike. ``pattern`` is the
    spelling the values take (ASCII, no quotes), anything else answers 400.
    """

    def __init__(self, *args, pattern: str, message: str, **kwargs) -> None:
        self.pattern = pattern
        validator = RegexValidator(re.compile(rf"\A(?:{pattern})\Z"), message)
        kwargs["validators"] = [*kwargs.get("validators", []), validator]
        super().__init__(*args, **kwargs)

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        alias = f"{self.field_name}_json_text"
        text = Cast(self.field_name, output_field=models.TextField())
        return qs.alias(**{alias: text}).filter(
            **{f"{alias}__icontains": json.dumps(value)}
        )


class FilterSet(RestFilterSet):
    """django-filter's FilterSet with integer columns and ids read strictly."""

    FILTER_DEFAULTS = {
        **RestFilterSet.FILTER_DEFAULTS,
        **{
            field: {"filter_class": IntegerFilter}
            for field in (
                models.AutoField,
                models.IntegerField,
                models.SmallIntegerField,
                models.BigIntegerField,
                models.PositiveIntegerField,
                models.PositiveSmallIntegerField,
                models.PositiveBigIntegerField,
            )
        },
        models.ForeignKey: {"filter_class": IdFilter},
        models.OneToOneField: {"filter_class": IdFilter},
    }

    @classmethod
    def filter_for_field(cls, field, field_name, lookup_expr=None):
        filter_ = super().filter_for_field(field, field_name, lookup_expr)
        bounds = column_range(field)
        if type(filter_) is IntegerFilter and bounds is not None:
            filter_.min_value, filter_.max_value = bounds
        return filter_


def _unreadable_integers(filterset) -> dict[str, list[ErrorDetail]]:
    """Integer parameters that are not whole numbers within their range."""
    model = filterset._meta.model or filterset.queryset.model
    errors = {}
    for name, filter_ in filterset.filters.items():
        raw = filterset.data.get(name)
        bounds = integer_bounds(filter_, model)
        if bounds is None or raw in (None, ""):
            continue
        low, high = bounds
        try:
            forms.IntegerField(min_value=low, max_value=high).clean(raw)
        except forms.ValidationError:
            errors[name] = _error(
                f"{raw!r} is not a whole number from {low} to {high}."
            )
    return errors


class StrictDjangoFilterBackend(DjangoFilterBackend):
    """django-filter, refusing a value the filter would otherwise ignore."""

    filterset_base = FilterSet

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        # Before validation: a choice filter would query with the value.
        unread = _unreadable_integers(filterset)
        if unread:
            raise ValidationError(unread)
        if not filterset.is_valid():
            return super().filter_queryset(request, queryset, view)
        for name, filter_ in filterset.filters.items():
            raw = filterset.data.get(name)
            if raw in (None, "") or filterset.form.cleaned_data.get(name) is not None:
                continue
            if isinstance(filter_, django_filters.BooleanFilter):
                unread[name] = _error(f"{raw!r} is not a boolean: use true or false.")
            else:
                unread[name] = _error(f"{raw!r} is not a value of this filter.")
        if unread:
            raise ValidationError(unread)
        return filterset.qs


class StrictFilterExtension(DjangoFilterExtension):
    """The schema of the strict backend: integer filters state their range, and
    JSON-list filters the spelling (pattern) of their values."""

    target_class = "config.filters.StrictDjangoFilterBackend"
    priority = 1

    def resolve_filter_field(
        self, auto_schema, model, filterset_class, field_name, filter_field
    ):
        parameters = super().resolve_filter_field(
            auto_schema, model, filterset_class, field_name, filter_field
        )
        for parameter in parameters:
            enum = parameter.get("schema", {}).get("enum")
            if enum is not None and "" not in enum:
                # An empty value leaves the list unfiltered, as for every filter.
                parameter["schema"]["enum"] = [*enum, ""]
        if isinstance(filter_field, JSONListFilter):
            for parameter in parameters:
                parameter["schema"] = {
                    "type": "string",
                    "pattern": rf"^(?:{filter_field.pattern})$",
                }
        bounds = integer_bounds(filter_field, model)
        if bounds is not None:
            for parameter in parameters:
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": bounds[0],
                    "maximum": bounds[1],
                }
        return parameters


class StrictOrderingFilter(OrderingFilter):
    """DRF's ordering filter, refusing fields the list cannot be ordered by."""

    def remove_invalid_fields(self, queryset, fields, view, request):
        valid = super().remove_invalid_fields(queryset, fields, view, request)
        unknown = [term for term in fields if term and term not in valid]
        if unknown:
            allowed = sorted(
                item[0]
                for item in self.get_valid_fields(queryset, view, {"request": request})
            )
            raise ValidationError(
                {
                    self.ordering_param: _error(
                        f"Cannot order by {', '.join(unknown)}; use one of "
                        f"{', '.join(allowed) or '(none)'}, with - for descending."
                    )
                }
            )
        return valid
