"""Sign in through the agency's OpenID Connect provider, in a real browser.

django-oauth-toolkit's provider runs in a second process
(``tests.oidc_provider``); Chromium clicks "Sign in with Agency ID", signs in
on the provider's own page, consents, and lands back on the portal signed in
with the agency and role the claim rules give.
"""

from __future__ import annotations

import pytest

from registry.models import Membership, Role
from tests.e2e.conftest import assert_accessible, switch_language
from tests.oidc_provider.portal import (
    PROVIDER_USERS,
    city_claim_rules,
    configure_portal,
    provider_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ADA, REMI = PROVIDER_USERS


@pytest.fixture(scope="module")
def oidc_provider(live_server):
    yield from provider_for(live_server)


@pytest.fixture
def sso_settings(settings, oidc_provider):
    return configure_portal(settings, oidc_provider)


@pytest.fixture
def city(db):
    return city_claim_rules()


def provider_sign_in(page, shot, user: dict) -> None:
    """On the provider's pages: sign in, then consent."""
    page.wait_for_url("**/accounts/login/?next=/o/authorize/**")
    assert page.get_by_role("heading", level=1).inner_text() == "Sign in to your agency"
    page.get_by_label("Agency username").fill(user["username"])
    page.get_by_label("Agency password").fill(user["password"])
    shot(page, "provider-sign-in")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/o/authorize/**")
    assert "Authorize Civitas portal?" in page.content()
    shot(page, "provider-consent")
    page.get_by_role("button", name="Authorize").click()


def test_sign_in_through_the_oidc_provider(page, shot, sso_settings, city):
    page.goto("/accounts/login/?next=/portal/account/")
    assert_accessible(page)
    shot(page, "portal-sign-in")

    page.get_by_role("link", name="Sign in with Agency ID").click()
    provider_sign_in(page, shot, ADA)

    page.wait_for_url("**/portal/account/")
    whoami = page.locator(".whoami").inner_text()
    assert whoami == "ada · City Council"
    assert page.locator(".account-agency").inner_text() == "City Council"
    assert page.locator(".account-role").inner_text() == "Maintainer"
    assert "Through single sign-on" in page.locator("dl.facts").inner_text()
    assert_accessible(page)
    shot(page, "signed-in-account")
    membership = Membership.objects.get(agency=city)
    assert membership.role == Role.MAINTAINER

    switch_language(page, "fr")
    assert page.get_by_role("heading", level=1).inner_text() == "Votre compte"
    assert page.locator(".account-role").inner_text() == "Responsable"
    assert_accessible(page)
    shot(page, "signed-in-account-fr")


def test_a_person_no_rule_matches_is_refused_and_told_why(
    page, shot, sso_settings, city
):
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Agency ID").click()
    provider_sign_in(page, shot, REMI)

    page.wait_for_url("**/accounts/login/")
    message = page.locator(".messages").inner_text()
    assert "Single sign-on refused: no rule of this platform" in message
    assert page.locator(".whoami").count() == 0
    assert_accessible(page)
    shot(page, "refused")
    switch_language(page, "fr")
    assert "Se connecter avec Agency ID" in page.content()
    assert_accessible(page)
    shot(page, "sign-in-fr")
