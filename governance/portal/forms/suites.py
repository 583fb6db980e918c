"""Forms of the suite pages: they collect the input, the API's serializers judge it.

A suite's tasks and thresholds are nested, so the page sends them as rows
(formsets); ``suite_payload`` turns the rows into the API's JSON shape and
``validated`` runs the API's own input serializer over it, so every rule is
written once (``governance.api.serializers``). The service then checks the
rest (datasheets, data files, metric names) and its ``DomainError`` becomes a
form error through ``add_domain_error``.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from config.exceptions import DomainError
from engine.evaluate import TASKS
from governance.models.evaluations import SuiteVisibility
from registry.models import DatasetVersion

VISIBILITY_CHOICES = [
    (SuiteVisibility.AGENCY, _("My agency and the oversight body")),
    (SuiteVisibility.SHARED, _("Shared with every agency (public data only)")),
]


ROW_GROUPS = {"tasks": _("Tasks"), "thresholds": _("Thresholds")}


def _messages(detail: Any, where: str = "") -> list[str]:
    """Every message of a serializer error tree, each prefixed with where it is."""
    if isinstance(detail, dict):
        if "message" in detail and "code" in detail:
            return [f"{where}{detail['message']}"]
        found = []
        for key, value in detail.items():
            if key == "non_field_errors":
                here = where
            elif isinstance(key, int) or str(key).isdigit():
                here = f"{where}" + _("row %(n)s") % {"n": int(key) + 1} + ": "
            else:
                here = f"{where}{key}: "
            found.extend(_messages(value, here))
        return found
    if isinstance(detail, list):
        return [m for value in detail for m in _messages(value, where)]
    return [f"{where}{detail}"]


def add_errors(form: forms.Form, errors: dict[str, Any]) -> None:
    """Put serializer (or service) field errors on the form's fields.

    Errors about the rows (tasks, thresholds) or a field the form lacks go on
    the whole form, prefixed with where they apply.
    """
    renames = getattr(form, "error_fields", {})
    for field, detail in errors.items():
        field = renames.get(field, field)
        if field in form.fields:
            for message in _messages(detail):
                form.add_error(field, message)
            continue
        label = ROW_GROUPS.get(field, field)
        where = "" if field == "non_field_errors" else f"{label}, "
        for message in _messages(detail, where):
            form.add_error(None, message)


def add_domain_error(form: forms.Form, exc: DomainError) -> None:
    """A service's refusal on the fields it names, else on the whole form."""
    if exc.fields:
        add_errors(form, exc.fields)
    else:
        form.add_error(None, exc.message)


def validated(serializer_class, form: forms.Form, payload: dict, request):
    """The API serializer's ``validated_data``, or None with errors on ``form``."""
    serializer = serializer_class(data=payload, context={"request": request})
    if serializer.is_valid():
        return serializer.validated_data
    add_errors(form, serializer.errors)
    return None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


class SuiteForm(forms.Form):
    """A suite's own fields; the tasks and thresholds come as rows beside it."""

    name = forms.CharField(
        label=_("Name"),
        max_length=80,
        help_text=_("Lower-case letters, digits and hyphens, e.g. permit-answers."),
    )
    version = forms.CharField(label=_("Version"), max_length=64)
    description = forms.CharField(
        label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    licence = forms.CharField(
        label=_("Licence"),
        max_length=200,
        help_text=_("The SPDX expression of a registered licence, e.g. CC-BY-4.0."),
    )
    visibility = forms.ChoiceField(
        label=_("Who may use it"), choices=VISIBILITY_CHOICES
    )
    metrics = forms.CharField(
        label=_("Metrics the suite is about"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("One per line, as task name.metric, e.g. answers.f1."),
    )

    def payload(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "version": data["version"],
            "description": data["description"],
            "licence": data["licence"],
            "visibility": data["visibility"],
            "metrics": _lines(data["metrics"]),
        }


class SuiteVersionForm(SuiteForm):
    """A new version: everything but the name, prefilled from the previous one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["name"]

    def payload(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "version": data["version"],
            "description": data["description"],
            "licence": data["licence"],
            "visibility": data["visibility"],
            "metrics": _lines(data["metrics"]),
        }


class SuiteEditForm(forms.Form):
    """What may change on a suite no run has used yet."""

    description = SuiteForm.base_fields["description"]
    visibility = SuiteForm.base_fields["visibility"]
    metrics = SuiteForm.base_fields["metrics"]

    def payload(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "description": data["description"],
            "visibility": data["visibility"],
            "metrics": _lines(data["metrics"]),
        }


class TaskForm(forms.Form):
    """One task of a suite: what to run over which dataset version."""

    task = forms.ChoiceField(
        label=_("Task"), choices=[("", "—"), *[(t, t) for t in TASKS]], required=False
    )
    name = forms.CharField(
        label=_("Name in metric keys"),
        required=False,
        max_length=80,
        help_text=_("Optional; the task's name by default."),
    )
    dataset_version = forms.ModelChoiceField(
        label=_("Dataset version"),
        queryset=DatasetVersion.objects.none(),
        required=False,
    )
    options = forms.CharField(
        label=_("Options"),
        required=False,
        help_text=_('Optional, as JSON, e.g. {"max_new_tokens": 32}.'),
    )

    def __init__(self, *args, datasets=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if datasets is not None:
            self.fields["dataset_version"].queryset = datasets

    def clean_options(self) -> dict:
        text = self.cleaned_data["options"].strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            raise forms.ValidationError(_("Not valid JSON.")) from None
        if not isinstance(value, dict):
            raise forms.ValidationError(_("Give a JSON object, e.g. {}."))
        return value

    def entry(self) -> dict[str, Any] | None:
        """The task as the API takes it; None for a row left blank."""
        data = self.cleaned_data
        if not data.get("task") and not data.get("dataset_version"):
            return None
        entry = {
            "task": data.get("task") or "",
            "dataset_version": data["dataset_version"].pk
            if data.get("dataset_version")
            else None,
            "options": data.get("options") or {},
        }
        if data.get("name"):
            entry["name"] = data["name"]
        return entry


class ThresholdForm(forms.Form):
    """Bounds one metric must meet."""

    metric = forms.CharField(label=_("Metric"), required=False, max_length=120)
    min = forms.FloatField(label=_("Minimum"), required=False)
    max = forms.FloatField(label=_("Maximum"), required=False)

    def bounds(self) -> tuple[str, dict[str, float]] | None:
        data = self.cleaned_data
        if not data.get("metric"):
            return None
        found = {k: data[k] for k in ("min", "max") if data.get(k) is not None}
        return data["metric"].strip(), found


def task_formset(data=None, *, datasets, initial=None, extra=3) -> forms.BaseFormSet:
    formset_class = forms.formset_factory(TaskForm, extra=extra, max_num=20)
    return formset_class(
        data, initial=initial, prefix="tasks", form_kwargs={"datasets": datasets}
    )


def threshold_formset(data=None, *, initial=None, extra=3) -> forms.BaseFormSet:
    formset_class = forms.formset_factory(ThresholdForm, extra=extra, max_num=40)
    return formset_class(data, initial=initial, prefix="thresholds")


def rows_payload(tasks, thresholds) -> dict[str, Any]:
    """The tasks and thresholds rows as the API's JSON."""
    payload: dict[str, Any] = {}
    if tasks is not None:
        payload["tasks"] = [e for form in tasks if (e := form.entry()) is not None]
    if thresholds is not None:
        payload["thresholds"] = dict(
            b for form in thresholds if (b := form.bounds()) is not None
        )
    return payload


def task_initial(suite) -> list[dict[str, Any]]:
    """A suite's tasks as rows of the form."""
    return [
        {
            "task": entry["task"],
            "name": entry.get("name", ""),
            "dataset_version": entry["dataset_version"],
            "options": json.dumps(entry["options"]) if entry.get("options") else "",
        }
        for entry in suite.tasks
    ]


def threshold_initial(suite) -> list[dict[str, Any]]:
    return [
        {"metric": metric, "min": bounds.get("min"), "max": bounds.get("max")}
        for metric, bounds in suite.thresholds.items()
    ]
