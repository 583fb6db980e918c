"""Two reviewers deciding at the same moment, on two real database connections.

Each decision runs in its own thread, hence its own PostgreSQL connection and
transaction; a barrier releases them together. The use case row lock
(``SELECT ... FOR UPDATE``) must make one wait for the other, so the second
sees the first's decision and the state stays consistent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from audit import services as audit
from audit.models import AuditEvent
from config.exceptions import InvalidTransition, PolicyViolation
from governance import selectors
from governance.models import Decision, UseCaseStatus, UseCaseTransition
from governance.services import decisions as decision_services
from tests.governance.conftest import RATIONALE

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]

S = UseCaseStatus


def _race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once, each in a thread with its own connection.

    Returns what each returned or the exception it raised, in order.
    """
    barrier = threading.Barrier(len(calls))
    outcomes: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[index] = call()
        except Exception as exc:
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(n, call)) for n, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a decision never finished (deadlock?)"
    return outcomes


def _approve(reviewer, use_case):
    return lambda: decision_services.use_case_approve(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )


def test_two_reviewers_approving_at_once_record_exactly_one_decision(
    kit, reviewer, second_reviewer
):
    use_case = kit.in_review()

    outcomes = _race(_approve(reviewer, use_case), _approve(second_reviewer, use_case))

    decisions = [o for o in outcomes if isinstance(o, Decision)]
    refusals = [o for o in outcomes if isinstance(o, InvalidTransition)]
    assert len(decisions) == 1 and len(refusals) == 1, outcomes
    assert "approved → approved" in refusals[0].message
    assert Decision.objects.count() == 1
    assert kit.refresh().status == S.APPROVED
    assert (
        UseCaseTransition.objects.filter(
            use_case=use_case, to_status=S.APPROVED
        ).count()
        == 1
    )
    assert AuditEvent.objects.filter(action="use_case.approved").count() == 1
    assert audit.verify_chain().ok


def test_approve_and_reject_at_once_leave_one_consistent_outcome(
    kit, reviewer, second_reviewer
):
    use_case = kit.in_review()

    outcomes = _race(
        _approve(reviewer, use_case),
        lambda: decision_services.use_case_reject(
            actor=second_reviewer, use_case=use_case, rationale=RATIONALE
        ),
    )

    [decision] = [o for o in outcomes if isinstance(o, Decision)]
    assert sum(isinstance(o, InvalidTransition) for o in outcomes) == 1
    assert Decision.objects.get() == decision
    assert kit.refresh().status == decision.to_status
    assert decision.to_status in (S.APPROVED, S.REJECTED)


def test_two_first_approvals_by_the_same_reviewer_count_once(kit, reviewer):
    use_case = kit.in_review("high")

    outcomes = _race(_approve(reviewer, use_case), _approve(reviewer, use_case))

    decisions = [o for o in outcomes if isinstance(o, Decision)]
    refusals = [o for o in outcomes if isinstance(o, PolicyViolation)]
    assert len(decisions) == 1 and len(refusals) == 1, outcomes
    assert refusals[0].code == "four_eyes_second_reviewer"
    assert Decision.objects.filter(kind="approve").count() == 1
    assert kit.refresh().status == S.IN_REVIEW


def test_two_reviewers_approving_a_high_risk_case_at_once_both_count(
    kit, reviewer, second_reviewer
):
    use_case = kit.in_review("high")

    outcomes = _race(_approve(reviewer, use_case), _approve(second_reviewer, use_case))

    assert all(isinstance(o, Decision) for o in outcomes), outcomes
    first, second = sorted(outcomes, key=lambda d: d.pk)
    assert first.to_status == S.IN_REVIEW  # recorded, round still open
    assert second.to_status == S.APPROVED  # completed by the other reviewer
    assert kit.refresh().status == S.APPROVED
    assert selectors.approval_in_force(use_case) == second
