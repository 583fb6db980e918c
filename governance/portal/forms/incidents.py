"""Forms of the governance portal's pages; each validates, then one service call."""

from __future__ import annotations

import time

from django import forms
from django.conf import settings
from django.core import signing
from django.core.exceptions import NON_FIELD_ERRORS
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from governance.models import IncidentStatus
from governance.services.incidents import (
    TRIAGE_NOTE_MAX_LENGTH,
    TRIAGE_NOTE_MIN_LENGTH,
    WHAT_HAPPENED_MAX_LENGTH,
    WHAT_HAPPENED_MIN_LENGTH,
)

_ISSUED_SALT = "civitas.incident-report-form"


def issue_stamp(use_case_id: int) -> str:
    """A signed stamp of when the report form of a use case was served."""
    return signing.dumps({"u": use_case_id, "t": time.time()}, salt=_ISSUED_SALT)


class IncidentReportForm(forms.Form):
    """A member of the public's incident report on one register entry.

    Spam protection without a third-party service: ``website`` is a honeypot
    hidden from people (a bot that fills every field fills it), and
    ``issued`` is a signed stamp of when the form was served, which must be
    at least ``CIVITAS_INCIDENT_FORM_MIN_SECONDS`` and at most
    ``CIVITAS_INCIDENT_FORM_MAX_SECONDS`` old and name this use case.
    """

    what_happened = forms.CharField(
        label=_("What happened"),
        min_length=WHAT_HAPPENED_MIN_LENGTH,
        max_length=WHAT_HAPPENED_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text=_(
            "Describe what the service did and why you think it went wrong. "
            "Do not include other people's personal details."
        ),
    )
    occurred_on = forms.DateField(
        label=_("When it happened"),
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("The day, or the first day you noticed it."),
    )
    contact_email = forms.EmailField(
        label=_("Your e-mail address"),
        required=False,
        help_text=_(
            "Only the oversight reviewers see it, to ask you more; it is never "
            "published."
        ),
    )
    website = forms.CharField(
        label=_("Leave this field empty"), required=False, max_length=200
    )
    issued = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args, use_case_id: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.use_case_id = use_case_id
        self.fields["website"].widget.attrs.update(
            {"autocomplete": "off", "tabindex": "-1"}
        )
        if not self.is_bound:
            self.initial["issued"] = issue_stamp(use_case_id)

    def clean_occurred_on(self):
        value = self.cleaned_data["occurred_on"]
        if value > timezone.localdate():
            raise forms.ValidationError(_("The date cannot be in the future."))
        return value

    def clean(self):
        data = super().clean()
        self._check_not_spam()
        return data

    def _check_not_spam(self) -> None:
        """Refuse a filled honeypot or a missing, forged, stale or foreign stamp.

        Both answer the same non-field error (code ``spam``), saying nothing
        of which check failed; a form younger than the minimum is a person
        being quick (code ``too_fast``).
        """
        refused = forms.ValidationError(
            _(
                "Your report could not be accepted. Reload the page, write your "
                "report and send it again."
            ),
            code="spam",
        )
        if self.data.get("website"):
            raise refused
        try:
            stamp = signing.loads(
                self.data.get("issued", ""),
                salt=_ISSUED_SALT,
                max_age=settings.CIVITAS_INCIDENT_FORM_MAX_SECONDS,
            )
        except signing.BadSignature as exc:  # SignatureExpired included
            raise refused from exc
        if not isinstance(stamp, dict) or stamp.get("u") != self.use_case_id:
            raise refused
        age = time.time() - float(stamp.get("t", 0))
        if age > settings.CIVITAS_INCIDENT_FORM_MAX_SECONDS:
            raise refused
        if age < settings.CIVITAS_INCIDENT_FORM_MIN_SECONDS:
            raise forms.ValidationError(
                _("That was quick: please read your report again, then send it."),
                code="too_fast",
            )

    @property
    def is_spam(self) -> bool:
        return self.has_error(NON_FIELD_ERRORS, code="spam")

    def restamp(self) -> None:
        """A fresh stamp and an empty honeypot, for the form shown again."""
        self.data = self.data.copy()
        self.data["issued"] = issue_stamp(self.use_case_id)
        self.data["website"] = ""


class TriageForm(forms.Form):
    """A reviewer's triage of an incident report, optionally suspending the use."""

    status = forms.ChoiceField(
        label=_("Outcome"),
        choices=[
            (IncidentStatus.TRIAGED, _("Triaged: under investigation")),
            (IncidentStatus.DISMISSED, _("Dismissed: no action needed")),
            (IncidentStatus.ACTIONED, _("Actioned: measures taken")),
        ],
        widget=forms.RadioSelect,
    )
    note = forms.CharField(
        label=_("Triage note"),
        min_length=TRIAGE_NOTE_MIN_LENGTH,
        max_length=TRIAGE_NOTE_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_(
            "Why you decided so. When you suspend the use case, this note is "
            "the suspension's rationale and is published in the register."
        ),
    )
    suspend = forms.BooleanField(
        label=_("Suspend this use case"),
        required=False,
        help_text=_(
            "Takes the use case out of service now (a decision of the oversight "
            "body, recorded and published). Only with the outcome 'Actioned'."
        ),
    )

    def clean(self):
        data = super().clean()
        if data.get("suspend") and data.get("status") != IncidentStatus.ACTIONED:
            self.add_error(
                "suspend",
                _("Suspending the use case is an action: choose 'Actioned'."),
            )
        return data
