"""Forms of the schedule pages; the API's serializers and the service judge the input.

The page offers an interval as a number and a unit, or a crontab; the form
turns the interval into seconds and the API's ``ScheduleCreateSerializer``
or ``ScheduleTimingSerializer`` checks the values as for a JSON client.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from governance.models import EvaluationSuite
from registry.models import ModelVersion

UNITS = [
    (1, _("seconds")),
    (60, _("minutes")),
    (3600, _("hours")),
    (86400, _("days")),
]
TIMING_CHOICES = [("interval", _("At an interval")), ("crontab", _("On a crontab"))]


class ScheduleTimingForm(forms.Form):
    """When a schedule runs: every N minutes, hours or days, or a crontab."""

    timing = forms.ChoiceField(
        label=_("Timing"), choices=TIMING_CHOICES, widget=forms.RadioSelect
    )
    every = forms.IntegerField(label=_("Every"), required=False, min_value=1)
    unit = forms.TypedChoiceField(
        label=_("Unit"), choices=UNITS, coerce=int, required=False, initial=86400
    )
    crontab = forms.CharField(
        label=_("Crontab"),
        required=False,
        max_length=120,
        help_text=_(
            "Five fields: minute hour day-of-month month day-of-week, in the "
            "platform's time zone; e.g. 30 2 * * 1 is Mondays at 02:30."
        ),
    )
    is_enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)

    # The API's field names, as this form shows them.
    error_fields = {"interval_seconds": "every"}

    def payload(self) -> dict[str, Any]:
        """The timing as the API takes it: interval_seconds or crontab."""
        data = self.cleaned_data
        payload: dict[str, Any] = {"is_enabled": data["is_enabled"]}
        if data["timing"] == "interval":
            every = data.get("every")
            payload["interval_seconds"] = (
                every * (data.get("unit") or 86400) if every else None
            )
        else:
            payload["crontab"] = data.get("crontab") or ""
        return payload


class ScheduleForm(ScheduleTimingForm):
    """A new schedule: which version on which suite, and when."""

    model_version = forms.ModelChoiceField(
        label=_("Model version"), queryset=ModelVersion.objects.none()
    )
    suite = forms.ModelChoiceField(
        label=_("Suite"), queryset=EvaluationSuite.objects.none()
    )
    field_order = ["model_version", "suite", "timing", "every", "unit", "crontab"]

    def __init__(self, *args, versions=None, suites=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_version"].queryset = versions
        self.fields["suite"].queryset = suites

    def payload(self) -> dict[str, Any]:
        return {
            **super().payload(),
            "model_version": self.cleaned_data["model_version"].pk,
            "suite": self.cleaned_data["suite"].pk,
        }


def timing_initial(schedule) -> dict[str, Any]:
    """A schedule's timing as the form shows it, in the largest whole unit."""
    initial: dict[str, Any] = {"is_enabled": schedule.is_enabled}
    if schedule.crontab:
        return {**initial, "timing": "crontab", "crontab": schedule.crontab}
    seconds = schedule.interval_seconds or 86400
    unit = next(size for size, _label in reversed(UNITS) if seconds % size == 0)
    return {**initial, "timing": "interval", "every": seconds // unit, "unit": unit}
