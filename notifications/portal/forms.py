"""Forms of the webhook pages; the API's serializers and the service judge the input."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from config.exceptions import DomainError
from notifications.events import EVENT_TYPES

EVENT_CHOICES = [
    (name, f"{name}: {event.description}")
    for name, event in sorted(EVENT_TYPES.items())
]


class WebhookForm(forms.Form):
    """A webhook's URL, the events it receives, a description and its switch."""

    url = forms.CharField(
        label=_("URL"),
        max_length=2000,
        help_text=_("The https address that receives the signed events."),
        widget=forms.URLInput,
    )
    description = forms.CharField(
        label=_("Description"), max_length=200, required=False
    )
    event_types = forms.MultipleChoiceField(
        label=_("Events"),
        choices=EVENT_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=_("The events of your agency this webhook receives."),
    )
    is_enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)

    def payload(self) -> dict[str, Any]:
        """The input as the API takes it; the API has no blank description."""
        data = dict(self.cleaned_data)
        if not data["description"]:
            del data["description"]
        return data


def add_errors(form: forms.Form, errors: dict[str, Any]) -> None:
    """Serializer or service field errors on the form's fields (else on the form)."""
    for field, detail in errors.items():
        messages = detail if isinstance(detail, list) else [detail]
        if isinstance(detail, dict):
            messages = [f"{key}: {value}" for key, value in detail.items()]
        for message in messages:
            if isinstance(message, dict):
                message = message.get("message", str(message))
            if field in form.fields:
                form.add_error(field, str(message))
            else:
                form.add_error(None, str(message))


def validated(serializer_class, form: forms.Form, payload: dict):
    """The API serializer's ``validated_data``, or None with errors on ``form``."""
    serializer = serializer_class(data=payload)
    if serializer.is_valid():
        return serializer.validated_data
    add_errors(form, serializer.errors)
    return None


def add_domain_error(form: forms.Form, exc: DomainError) -> None:
    if exc.fields:
        add_errors(form, exc.fields)
    else:
        form.add_error(None, exc.message)
