"""Which separation-of-duties rule stops a reviewer, said before they try.

The rules are enforced by ``governance.services.lifecycle`` and
``decisions`` (``four_eyes_*`` error codes); this module only reads the
same facts to tell a reviewer in advance which rule applies and why, so the
review page can say it beside the decision form. The services stay the
authority: a refusal they raise is shown with the explanation of its code
(``explain_refusal``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _

from governance.models import (
    Decision,
    DecisionKind,
    EvaluationRun,
    PolicyResult,
    RiskTier,
    Submission,
    UseCase,
)
from governance.portal.forms.review import START_REVIEW, WAIVING_ACTIONS
from governance.services.attestations import evidence_run_ids
from registry.models import Role
from registry.selectors import user_agency_id, user_role

EVERY_ACTION = frozenset({START_REVIEW, *(str(kind) for kind in DecisionKind.values)})
RULE_TITLES = {
    "four_eyes_reviewer_only": _("Only reviewers decide"),
    "four_eyes_own_agency": _("Nobody decides on their own agency's use case"),
    "four_eyes_submitter": _("The submitter does not decide"),
    "four_eyes_evaluation_requester": _(
        "Whoever requested the evidence does not approve it"
    ),
    "four_eyes_second_reviewer": _("A high-risk use needs two different reviewers"),
    "prohibited_tier": _("A prohibited practice is never approved"),
}


@dataclass(frozen=True)
class DutyConflict:
    """A rule that stops ``actions`` for this reader on this use case, and why."""

    rule: str
    title: str
    why: str
    actions: frozenset[str]

    @property
    def blocks_everything(self) -> bool:
        return self.actions >= EVERY_ACTION


def _requested_runs(user, result: PolicyResult | None) -> list[int]:
    run_ids = evidence_run_ids(result)
    if not run_ids:
        return []
    return sorted(
        EvaluationRun.objects.filter(
            pk__in=run_ids, requested_by_id=user.pk
        ).values_list("pk", flat=True)
    )


def _conflict(rule: str, why: str, actions: frozenset[str]) -> DutyConflict:
    return DutyConflict(rule, str(RULE_TITLES[rule]), why, actions)


def _role_and_agency(user, use_case: UseCase) -> list[DutyConflict]:
    found = []
    if user_role(user) != Role.REVIEWER:
        why = _(
            "You are a platform administrator: administrators operate the "
            "platform and take no oversight decisions. A reviewer of the "
            "oversight body decides."
        )
        found.append(_conflict("four_eyes_reviewer_only", str(why), EVERY_ACTION))
    if user_agency_id(user) == use_case.agency_id:
        why = _(
            "This use case belongs to %(agency)s, your own agency: a reviewer of "
            "another agency decides on it."
        ) % {"agency": use_case.agency.name}
        found.append(_conflict("four_eyes_own_agency", str(why), EVERY_ACTION))
    return found


def _submitter(user, submission: Submission | None) -> list[DutyConflict]:
    if submission is None or submission.submitted_by_id != user.pk:
        return []
    why = _(
        "You submitted this use case (submission %(number)s): another person "
        "reviews and decides on it."
    ) % {"number": submission.number}
    return [_conflict("four_eyes_submitter", str(why), EVERY_ACTION)]


def _evidence_and_round(
    user, result: PolicyResult | None, round_approvals: list[Decision]
) -> list[DutyConflict]:
    found = []
    runs = _requested_runs(user, result)
    if runs:
        why = _(
            "You requested evaluation run %(runs)s, which the policy result "
            "relies on: another reviewer approves."
        ) % {"runs": ", ".join(map(str, runs))}
        found.append(
            _conflict("four_eyes_evaluation_requester", str(why), WAIVING_ACTIONS)
        )
    if any(decision.reviewer_id == user.pk for decision in round_approvals):
        why = _(
            "You already gave the first approval in this review round: the "
            "second approval of a high-risk use case comes from another reviewer."
        )
        found.append(
            _conflict(
                "four_eyes_second_reviewer",
                str(why),
                frozenset({DecisionKind.APPROVE}),
            )
        )
    return found


def duty_conflicts(
    user,
    use_case: UseCase,
    *,
    submission: Submission | None,
    result: PolicyResult | None,
    round_approvals: list[Decision],
) -> list[DutyConflict]:
    """Every separation-of-duties rule that applies to ``user`` here, in order.

    ``round_approvals`` are the approvals of the current review round. The
    prohibited tier is not a four-eyes rule but stops approvals the same way.
    """
    found = [
        *_role_and_agency(user, use_case),
        *_submitter(user, submission),
        *_evidence_and_round(user, result, round_approvals),
    ]
    if use_case.risk_tier == RiskTier.PROHIBITED:
        why = _(
            "The impact assessment places this use among the practices the EU AI "
            "Act prohibits (Article 5): it can be rejected, never approved."
        )
        found.append(_conflict("prohibited_tier", str(why), WAIVING_ACTIONS))
    return found


def explain_refusal(code: str) -> str:
    """The title of the rule a service's refusal names, or "" for other errors."""
    title = RULE_TITLES.get(code)
    return str(title) if title else ""
