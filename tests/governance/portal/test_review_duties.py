"""The review page's separation-of-duties explanations name the services' rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.models import Decision, Submission, UseCase
from governance.portal.duties import (
    EVERY_ACTION,
    RULE_TITLES,
    duty_conflicts,
    explain_refusal,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def _rules(user, use_case, *, submission=None, approvals=()):
    return {
        c.rule: c
        for c in duty_conflicts(
            user,
            use_case,
            submission=submission,
            result=None,
            round_approvals=list(approvals),
        )
    }


def test_a_reviewer_of_the_owning_agency_who_submitted_is_told_both_rules(
    reviewer, oversight_body
):
    use_case = UseCase(agency=oversight_body, risk_tier="minimal")
    submission = Submission(number=2, submitted_by=reviewer)
    found = _rules(reviewer, use_case, submission=submission)
    assert set(found) == {"four_eyes_own_agency", "four_eyes_submitter"}
    assert "Oversight Office, your own agency" in found["four_eyes_own_agency"].why
    assert "(submission 2)" in found["four_eyes_submitter"].why
    assert all(c.blocks_everything for c in found.values())


def test_a_prohibited_use_and_a_first_approver_are_told_what_they_cannot_do(
    reviewer, agency_a
):
    use_case = UseCase(agency=agency_a, risk_tier="prohibited")
    approval = Decision(reviewer=reviewer, kind="approve")
    found = _rules(reviewer, use_case, approvals=[approval])
    assert set(found) == {"prohibited_tier", "four_eyes_second_reviewer"}
    assert found["four_eyes_second_reviewer"].actions == {"approve"}
    assert found["prohibited_tier"].actions == {"approve", "reinstate"}
    assert not found["prohibited_tier"].blocks_everything


def test_nothing_stands_in_the_way_of_a_reviewer_of_another_agency(reviewer, agency_a):
    assert _rules(reviewer, UseCase(agency=agency_a, risk_tier="high")) == {}


def test_every_explained_rule_is_a_code_the_services_raise():
    import governance.services.decisions as decisions
    import governance.services.lifecycle as lifecycle

    services = "".join(
        Path(module.__file__).read_text() for module in (lifecycle, decisions)
    )
    for rule in RULE_TITLES:
        assert f'"{rule}"' in services, rule
        assert explain_refusal(rule)
    assert explain_refusal("invalid_transition") == ""
    assert "start_review" in EVERY_ACTION
