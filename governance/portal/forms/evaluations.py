"""Forms of the evaluation pages: ask for a run, filter the list, pick a comparison."""

from __future__ import annotations

from django import forms
from django.db.models import F
from django.utils.translation import gettext_lazy as _

from governance.models import EvaluationSuite, RunStatus
from governance.templatetags.agency_portal import RUN_STATUS


def visible_suites(user):
    """Suites the user may run: built-in first, then by name, newest version first."""
    return (
        EvaluationSuite.objects.visible_to(user)
        .select_related("agency")
        .order_by(F("agency_id").asc(nulls_first=True), "name", "-created_at")
    )


def suite_label(suite: EvaluationSuite) -> str:
    owner = suite.agency.name if suite.agency_id else _("built-in")
    return f"{suite.name} {suite.version} ({owner})"


class SuiteChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: EvaluationSuite) -> str:
        return suite_label(obj)


class EvaluationRequestForm(forms.Form):
    """The suite to run on one version; the service decides whether it may."""

    suite = SuiteChoiceField(
        queryset=EvaluationSuite.objects.none(),
        label=_("Suite"),
        empty_label=_("Choose a suite"),
        help_text=_(
            "The built-in suites of the platform and your agency's own. Only "
            "suites whose tasks fit this model's kind are listed."
        ),
    )

    def __init__(self, *args, user, model_version, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        suites = visible_suites(user)
        fitting = [
            suite.pk
            for suite in suites
            if not suite.unsupported_reason(model_version.kind)
        ]
        self.fields["suite"].queryset = suites.filter(pk__in=fitting)


class EvaluationFilterForm(forms.Form):
    """Filters of the runs list; every field optional."""

    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[("", _("Any status"))]
        + [(value, RUN_STATUS[value][0]) for value in RunStatus.values],
    )
    suite = forms.ChoiceField(label=_("Suite"), required=False)
    model = forms.CharField(
        label=_("Model name contains"), required=False, max_length=200
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        names = (
            EvaluationSuite.objects.visible_to(user)
            .order_by("name")
            .values_list("name", flat=True)
            .distinct()
        )
        self.fields["suite"].choices = [("", _("Any suite"))] + [
            (name, name) for name in names
        ]


class CompareForm(forms.Form):
    """The suite whose runs are compared, and the quality metric to compare on."""

    suite = SuiteChoiceField(
        queryset=EvaluationSuite.objects.none(),
        label=_("Suite"),
        empty_label=_("Choose a suite"),
    )
    metric = forms.ChoiceField(
        label=_("Quality metric"),
        required=False,
        help_text=_("A metric of the suite's tasks; the first one when left empty."),
    )

    def __init__(self, *args, user, metrics=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["suite"].queryset = visible_suites(user)
        self.fields["metric"].choices = [("", _("The suite's first metric"))] + [
            (metric, metric) for metric in metrics
        ]
