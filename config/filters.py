"""The API's filter backends: a value no filter can read answers 400, never nothing.

django-filter already refuses a value its form field rejects (``?status=nope``
on a choice filter), but a boolean filter reads anything it does not know
(``?released=maybe``) as "no filter", and DRF's ordering filter drops an
unknown ``ordering`` field; either way the caller got an unfiltered or
unordered list and no sign of the mistake. These backends answer 400 in the
API's error shape, with ``fields`` naming the query parameter. They are the
``DEFAULT_FILTER_BACKENDS`` of ``REST_FRAMEWORK``; a view that sets its own
backends uses these classes.
"""

from __future__ import annotations

from django_filters import filters as django_filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.filters import OrderingFilter


def _error(message: str) -> list[ErrorDetail]:
    return [ErrorDetail(message, code="invalid")]


class StrictDjangoFilterBackend(DjangoFilterBackend):
    """django-filter, refusing a value the filter would otherwise ignore."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            return super().filter_queryset(request, queryset, view)
        unread = {}
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
