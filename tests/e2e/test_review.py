"""A reviewer reviews and approves; a four-eyes refusal is explained."""

from __future__ import annotations

import pytest

from governance.models import Decision, UseCaseStatus
from tests.e2e.conftest import (
    PASSWORD,
    accessible_in_both_languages,
    assert_accessible,
    new_page,
    sign_in,
)
from tests.governance.conftest import *  # noqa: F403  (the lifecycle kit and people)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


def _with_password(*users) -> None:
    for user in users:
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])


def test_a_reviewer_reviews_and_approves_a_submitted_use_case(
    page, shot, kit, reviewer, browser, live_server
):
    kit.assess()
    kit.run()
    kit.submit()
    _with_password(reviewer)
    sign_in(page, "rita")

    page.get_by_role("link", name="Review queue").first.click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Review queue"
    accessible_in_both_languages(page, shot, "queue")

    page.get_by_role("link", name=kit.use_case.title).click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == kit.use_case.title
    assert page.get_by_text("Which areas does the use touch?").count() >= 1
    assert page.locator("table.policy-outcomes").get_by_text("Passed").count() == 1
    accessible_in_both_languages(page, shot, "review-submitted")
    phone = new_page(browser, live_server.url, width=360)
    try:
        sign_in(phone, "rita")
        phone.goto(f"/portal/review/{kit.use_case.pk}/")
        overflow = phone.evaluate(
            "document.documentElement.scrollWidth - "
            "document.documentElement.clientWidth"
        )
        assert overflow <= 0
        shot(phone, "review-phone")
    finally:
        phone.context.close()

    page.get_by_label("Start the review").check()
    page.get_by_role("button", name="Record the decision").click()
    page.wait_for_load_state()
    assert "has started" in page.locator(".messages").inner_text()
    shot(page, "review-started")

    page.get_by_label("Approve").check()
    page.get_by_label("Rationale").fill(
        "The evidence is complete and the oversight described is adequate."
    )
    page.get_by_role("button", name="Record the decision").click()
    page.wait_for_load_state()
    assert "now “Approved”" in page.locator(".messages").inner_text()
    assert_accessible(page)
    shot(page, "approved")
    assert kit.refresh().status == UseCaseStatus.APPROVED
    assert Decision.objects.get(use_case=kit.use_case).reviewer == reviewer

    page.get_by_role("link", name="Use cases").first.click()
    page.wait_for_load_state()
    page.get_by_label("Status").select_option("approved")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    assert page.get_by_role("link", name=kit.use_case.title).count() == 1
    accessible_in_both_languages(page, shot, "use-cases")


def test_the_first_approver_of_a_high_risk_use_is_told_and_refused(
    page, shot, kit, reviewer, second_reviewer, browser, live_server
):
    kit.in_review("high")
    _with_password(reviewer, second_reviewer)
    sign_in(page, "rita")
    page.goto(f"/portal/review/{kit.use_case.pk}/")
    assert page.get_by_text("Two-person approval: 0 of 2").count() == 1
    page.get_by_label("Approve").check()
    page.get_by_label("Rationale").fill("Complete evidence; the safeguards hold.")
    page.get_by_role("button", name="Record the decision").click()
    page.wait_for_load_state()
    assert "stays in review" in page.locator(".messages").inner_text()
    duties = page.locator("#duties")
    assert "A high-risk use needs two different reviewers" in duties.inner_text()
    assert "You already gave the first approval" in duties.inner_text()
    assert page.get_by_text("Waiting for the second approval").count() == 1
    accessible_in_both_languages(page, shot, "first-approval")

    page.get_by_label("Approve").check()
    page.get_by_label("Rationale").fill("Approving again to complete the pair.")
    page.get_by_role("button", name="Record the decision").click()
    page.wait_for_load_state()
    alert = page.get_by_role("alert")
    assert "The decision was not recorded" in alert.inner_text()
    assert "A high-risk use needs two different reviewers" in alert.inner_text()
    accessible_in_both_languages(page, shot, "refused")
    assert kit.refresh().status == UseCaseStatus.IN_REVIEW

    other = new_page(browser, live_server.url)
    try:
        sign_in(other, "rolf")
        other.goto(f"/portal/review/{kit.use_case.pk}/")
        assert other.locator("#duties").count() == 0
        other.get_by_label("Approve").check()
        other.get_by_label("Rationale").fill("Second approval: I concur with Rita.")
        other.get_by_role("button", name="Record the decision").click()
        other.wait_for_load_state()
        assert "now “Approved”" in other.locator(".messages").inner_text()
        shot(other, "second-approval")
    finally:
        other.context.close()
    assert kit.refresh().status == UseCaseStatus.APPROVED
