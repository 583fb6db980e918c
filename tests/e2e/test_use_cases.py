"""In a browser: describe a use case, answer the impact questionnaire, submit it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from governance import risk
from governance.models import Questionnaire, Submission, UseCase, UseCaseStatus
from governance.services import use_cases as use_case_services
from registry.models import ArtifactState, ModelKind, Role
from tests.e2e.conftest import PASSWORD, assert_accessible, sign_in, switch_language
from tests.factories import (
    AgencyFactory,
    MembershipFactory,
    ModelVersionFactory,
    UserFactory,
)
from tests.governance.conftest import TIER_ANSWERS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def alice(db):
    agency = AgencyFactory(slug="city-a", name="City A", jurisdiction="FR")
    user = UserFactory(username="alice", password=PASSWORD)
    MembershipFactory(user=user, agency=agency, role=Role.MEMBER)
    for definition in risk.shipped_definitions():
        Questionnaire.objects.get_or_create(
            name=definition["name"],
            version=definition["version"],
            defaults={"title": definition["title"], "definition": definition},
        )
    ModelVersionFactory(
        model__agency=agency,
        model__name="Reply drafter",
        version="1.2.0",
        artifact_state=ArtifactState.AVAILABLE,
        artifact_digest="a" * 64,
        kind=ModelKind.CAUSAL_LM_KV,
    )
    return user


def test_describe_assess_and_submit_a_use_case(page, shot, alice):
    sign_in(page, "alice")
    assert page.url.endswith("/portal/")
    shot(page, "dashboard")
    page.get_by_role("link", name="Use cases").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Our use cases"
    assert_accessible(page)
    shot(page, "use-case-list-empty")

    page.get_by_role("link", name="Describe a new use case").click()
    assert_accessible(page)
    page.get_by_role("button", name="Save the draft").click()  # nothing filled in
    assert page.get_by_role("alert").is_visible()
    assert_accessible(page)
    shot(page, "use-case-form-errors")

    page.get_by_label("Model version").select_option(
        label="Reply drafter 1.2.0 (City A)"
    )
    page.get_by_label("Title").fill("Answering questions about opening hours")
    page.get_by_label("Purpose").fill("A chat assistant answers residents' questions.")
    page.get_by_label("Public service").fill("Town hall reception")
    page.get_by_label("Affected people").fill("Residents who ask questions")
    page.get_by_label("Human oversight").fill("Staff review a sample every week.")
    valid_until = timezone.localdate() + timedelta(days=180)
    page.get_by_label("Valid until").fill(valid_until.isoformat())
    shot(page, "use-case-form-filled")
    page.get_by_role("button", name="Save the draft").click()

    assert page.get_by_role("heading", level=1).inner_text() == "Impact questionnaire"
    assert_accessible(page)
    shot(page, "questionnaire")
    for question, answer in TIER_ANSWERS["limited"].items():
        for value in answer if isinstance(answer, list) else [answer]:
            page.locator(f'input[name="q_{question}"][value="{value}"]').check()
    shot(page, "questionnaire-answered")
    page.get_by_role("button", name="Save the answers").click()

    assert (
        page.locator("#risk-tier").inner_text() == "Limited risk (transparency duties)"
    )
    reasons = page.locator("#risk-reasons").inner_text()
    # The trigger's reason in words, with its question, not the stored ids.
    assert "People interact directly with the system" in reasons
    assert "yes_disclosed" not in reasons
    assert_accessible(page)
    shot(page, "use-case-assessed")

    page.get_by_role("button", name="Submit for review").click()
    page.wait_for_load_state()
    assert "submitted" in page.locator(".messages").inner_text()
    assert page.get_by_role("button", name="Submit for review").count() == 0
    shot(page, "use-case-submitted")
    use_case = UseCase.objects.get()
    assert use_case.status == UseCaseStatus.SUBMITTED
    assert use_case.risk_tier == "limited"
    assert Submission.objects.get().submitted_by == alice

    switch_language(page, "fr")
    assert_accessible(page)
    shot(page, "use-case-submitted-fr")
    page.goto("/portal/use-cases/mine/")
    assert page.get_by_role("heading", level=1).inner_text() == "Nos cas d\u2019usage"
    assert_accessible(page)
    shot(page, "use-case-list-fr")
    page.goto("/portal/use-cases/mine/new/")
    assert_accessible(page)
    shot(page, "use-case-form-fr")


def test_questionnaire_is_accessible_in_french_and_on_a_phone(phone, shot, alice):
    sign_in(phone, "alice")
    phone.goto("/portal/use-cases/mine/new/")
    switch_language(phone, "fr")
    version = alice.membership.agency.models.get().versions.get()
    use_case = use_case_services.use_case_create(
        actor=alice,
        model_version=version,
        title="Réponses aux usagers",
        purpose="Brouillons de réponses.",
        public_service="Accueil",
        valid_until=timezone.localdate() + timedelta(days=90),
    )
    phone.goto(f"/portal/use-cases/mine/{use_case.pk}/assessment/")
    assert (
        phone.get_by_role("heading", level=1).inner_text()
        == "Questionnaire d\u2019impact"
    )
    assert_accessible(phone)
    overflow = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    shot(phone, "questionnaire-fr-phone")
