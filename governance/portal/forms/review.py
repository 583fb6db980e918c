"""Forms of the reviewers' pages: the use case filters and the decision form.

They validate what a person typed; the decision itself is checked by the
services (``governance.services.lifecycle`` and ``decisions``), whose
refusals the views show as form errors.
"""

from __future__ import annotations

from django import forms
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from governance.models import DecisionKind, UseCaseStatus
from governance.portal.readable import RISK_TIER_LABELS
from governance.services.lifecycle import (
    RATIONALE_MAX_LENGTH,
    RATIONALE_MIN_LENGTH,
    WAIVER_MAX_JUSTIFICATION,
    WAIVER_MIN_JUSTIFICATION,
)

START_REVIEW = "start_review"
STATUS_LABELS = {
    UseCaseStatus.DRAFT: _("Draft"),
    UseCaseStatus.SUBMITTED: _("Submitted"),
    UseCaseStatus.IN_REVIEW: _("In review"),
    UseCaseStatus.APPROVED: _("Approved"),
    UseCaseStatus.CHANGES_REQUESTED: _("Changes requested"),
    UseCaseStatus.REJECTED: _("Rejected"),
    UseCaseStatus.SUSPENDED: _("Suspended"),
    UseCaseStatus.RETIRED: _("Retired"),
    UseCaseStatus.EXPIRED: _("Expired"),
}
ACTION_LABELS = {
    START_REVIEW: _("Start the review"),
    DecisionKind.APPROVE: _("Approve"),
    DecisionKind.REQUEST_CHANGES: _("Request changes"),
    DecisionKind.REJECT: _("Reject"),
    DecisionKind.SUSPEND: _("Suspend"),
    DecisionKind.REINSTATE: _("Reinstate"),
    DecisionKind.RETIRE: _("Retire"),
}
# What a reviewer may do from each status (the services check it again).
ACTIONS_BY_STATUS = {
    UseCaseStatus.SUBMITTED: [START_REVIEW],
    UseCaseStatus.IN_REVIEW: [
        DecisionKind.APPROVE,
        DecisionKind.REQUEST_CHANGES,
        DecisionKind.REJECT,
    ],
    UseCaseStatus.APPROVED: [DecisionKind.SUSPEND, DecisionKind.RETIRE],
    UseCaseStatus.SUSPENDED: [DecisionKind.REINSTATE, DecisionKind.RETIRE],
    UseCaseStatus.EXPIRED: [DecisionKind.RETIRE],
}
WAIVING_ACTIONS = frozenset({DecisionKind.APPROVE, DecisionKind.REINSTATE})


class UseCaseFilterForm(forms.Form):
    """Filters of the list of every use case; every field is optional."""

    q = forms.CharField(
        label=_("Search"),
        required=False,
        max_length=200,
        help_text=_("Title, purpose or public service"),
    )
    agency = forms.ChoiceField(label=_("Agency"), required=False)
    status = forms.ChoiceField(label=_("Status"), required=False)
    risk_tier = forms.ChoiceField(label=_("Risk tier"), required=False)

    def __init__(self, *args, agencies=(), **kwargs):
        super().__init__(*args, **kwargs)
        anything = [("", _("Any"))]
        self.fields["agency"].choices = anything + [
            (agency.slug, agency.name) for agency in agencies
        ]
        self.fields["status"].choices = anything + list(STATUS_LABELS.items())
        self.fields["risk_tier"].choices = (
            anything + list(RISK_TIER_LABELS.items()) + [("none", _("Not assessed"))]
        )


class DecisionForm(forms.Form):
    """One reviewer decision: what, why, and the failed rules it waives."""

    action = forms.ChoiceField(label=_("Decision"), widget=forms.RadioSelect)
    rationale = forms.CharField(
        label=_("Rationale"),
        required=False,
        max_length=RATIONALE_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=format_lazy(
            _(
                "Why you decide so, in at least {minimum} characters. The signed "
                "statement of the decision carries it."
            ),
            minimum=RATIONALE_MIN_LENGTH,
        ),
    )
    waiver_rule_ids = forms.MultipleChoiceField(
        label=_("Failed rules to waive"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_(
            "Only for an approval or a reinstatement: every failed rule of the "
            "latest policy result must be waived, with one justification."
        ),
    )
    waiver_justification = forms.CharField(
        label=_("Justification of the waiver"),
        required=False,
        max_length=WAIVER_MAX_JUSTIFICATION,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=format_lazy(
            _("At least {minimum} characters."), minimum=WAIVER_MIN_JUSTIFICATION
        ),
    )

    def __init__(self, *args, actions=(), failed_rules=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [
            (action, ACTION_LABELS[action]) for action in actions
        ]
        self.fields["waiver_rule_ids"].choices = [(rule, rule) for rule in failed_rules]
        if not failed_rules:
            del self.fields["waiver_rule_ids"]
            del self.fields["waiver_justification"]

    def clean(self):
        data = super().clean()
        action = data.get("action")
        if action and action != START_REVIEW and not (data.get("rationale") or ""):
            self.add_error("rationale", _("Give the rationale of your decision."))
        if data.get("waiver_rule_ids") and action not in WAIVING_ACTIONS:
            self.add_error(
                "waiver_rule_ids",
                _("Only an approval or a reinstatement waives failed rules."),
            )
        return data
