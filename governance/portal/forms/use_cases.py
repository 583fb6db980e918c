"""Forms of the agency's use-case pages: what the use is, and the impact questionnaire.

They check the shape of the input (the API's serializers check the same:
``UseCaseFieldsSerializer``, ``AssessmentSerializer``); the rules (who may
write, dates, visible versions, answers that fit the questionnaire) are the
services', whose ``DomainError`` is put back on the form by ``add_domain_error``.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from config.exceptions import DomainError
from registry.models import ModelVersion

USE_CASE_FIELDS = (
    "model_version",
    "title",
    "purpose",
    "public_service",
    "affected_people",
    "decision_informed",
    "human_oversight",
    "valid_until",
)


class VersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: ModelVersion) -> str:
        return f"{obj.model.name} {obj.version} ({obj.model.agency.name})"


class DateInput(forms.DateInput):
    input_type = "date"


class UseCaseForm(forms.Form):
    """What a use case says; the same fields as ``POST /use-cases/``."""

    model_version = VersionChoiceField(
        queryset=ModelVersion.objects.none(),
        label=_("Model version"),
        empty_label=_("Choose a version"),
        help_text=_("Your agency's versions and the public ones."),
    )
    title = forms.CharField(label=_("Title"), max_length=200)
    purpose = forms.CharField(
        label=_("Purpose"),
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("What the model is used for, and why."),
    )
    public_service = forms.CharField(
        label=_("Public service"),
        max_length=300,
        help_text=_("The public service the use belongs to."),
    )
    affected_people = forms.CharField(
        label=_("Affected people"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Who is affected by the outputs."),
    )
    decision_informed = forms.CharField(
        label=_("Decision informed"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("The decision the outputs inform, or 'none'."),
    )
    human_oversight = forms.CharField(
        label=_("Human oversight"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Who checks the outputs, when, and with what authority."),
    )
    valid_until = forms.DateField(
        label=_("Valid until"),
        widget=DateInput(format="%Y-%m-%d"),
        help_text=_("The last day the use may run; a date after today."),
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_version"].queryset = (
            ModelVersion.objects.visible_to(user)
            .select_related("model__agency")
            .order_by("model__name", "-created_at")
        )


def add_domain_error(form: forms.Form, exc: DomainError) -> None:
    """Put a service's refusal on the form: per field where it names one."""
    placed = False
    for name, problems in (exc.fields or {}).items():
        for problem in problems:
            message = (
                problem.get("message", "") if isinstance(problem, dict) else problem
            )
            field = _field_of(form, name, message)
            form.add_error(field, message)
            placed = True
    if not placed:
        form.add_error(None, exc.message)


def _field_of(form: forms.Form, name: str, message: str) -> str | None:
    """The form field an error is about: itself, or the question an answer names."""
    if name in form.fields:
        return name
    if name == "answers":
        for question in re.findall(r"'([^']+)'", message):
            if f"q_{question}" in form.fields:
                return f"q_{question}"
    return None


class QuestionnaireForm(forms.Form):
    """The impact questionnaire as a form: one field per question.

    A single-choice question is a group of radio buttons, a multiple-choice
    one a group of checkboxes; each is shown in a fieldset whose legend is
    the question. Field names are ``q_<question id>``.
    """

    def __init__(self, *args, definition: dict[str, Any], answers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.definition = definition
        answers = answers or {}
        for question in definition["questions"]:
            choices = [(a["id"], a["text"]) for a in question["answers"]]
            common = {
                "label": question["text"],
                "help_text": question.get("help", ""),
                "choices": choices,
                "error_messages": {"required": _("Choose an answer.")},
            }
            given = answers.get(question["id"])
            if question.get("multiple"):
                field = forms.MultipleChoiceField(
                    widget=forms.CheckboxSelectMultiple, initial=given, **common
                )
            else:
                field = forms.ChoiceField(
                    widget=forms.RadioSelect,
                    initial=given[0] if isinstance(given, list) and given else given,
                    **common,
                )
            field.section = question.get("section", "")
            self.fields[f"q_{question['id']}"] = field

    def answers(self) -> dict[str, Any]:
        """The cleaned answers as the service takes them: question id → id(s)."""
        return {
            name.removeprefix("q_"): value
            for name, value in self.cleaned_data.items()
            if name.startswith("q_")
        }

    def sections(self) -> list[tuple[str, list[forms.BoundField]]]:
        """The questions grouped by their section, in the questionnaire's order."""
        grouped: list[tuple[str, list[forms.BoundField]]] = []
        for bound in self:
            section = getattr(bound.field, "section", "")
            if not grouped or grouped[-1][0] != section:
                grouped.append((section, []))
            grouped[-1][1].append(bound)
        return grouped
