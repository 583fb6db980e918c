"""The auditors' search form: an object's type and id."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _


class AuditSearchForm(forms.Form):
    """Which object's chain to open; the types are those the reader can see."""

    object_type = forms.ChoiceField(label=_("Object type"))
    object_id = forms.CharField(
        label=_("Object id"),
        max_length=100,
        help_text=_("The id of the object, e.g. 42."),
    )

    def __init__(self, *args, object_types=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["object_type"].choices = list(object_types)

    def clean_object_id(self) -> str:
        value = self.cleaned_data["object_id"].strip()
        if "/" in value:
            raise forms.ValidationError(_("An object id has no slash."))
        return value
