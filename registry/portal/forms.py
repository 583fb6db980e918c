"""Forms of the registry's portal pages: they validate, then one service call."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _


class SignOutEverywhereForm(forms.Form):
    """End every session of the reader; optionally revoke their API tokens."""

    revoke_tokens = forms.BooleanField(
        required=False,
        label=_("Also revoke all my API tokens"),
        help_text=_(
            "Scripts and tools that use your tokens stop working; create new "
            "tokens afterwards if you need them."
        ),
    )
