"""Sessions in a real browser: sign out everywhere, and the locked sign-in page."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.e2e.conftest import (
    PASSWORD,
    assert_accessible,
    new_page,
    sign_in,
    switch_language,
)
from tests.factories import AgencyFactory, MembershipFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_attempts():
    cache.clear()
    yield
    cache.clear()


def test_sign_out_everywhere_ends_the_other_browser_too(
    browser, live_server, page, shot
):
    user = UserFactory(username="ada", password=PASSWORD)
    MembershipFactory(user=user, agency=AgencyFactory(name="City Council"))
    other = new_page(browser, live_server.url)
    try:
        sign_in(other, "ada")
        sign_in(page, "ada")
        page.goto("/portal/account/")
        assert_accessible(page)
        shot(page, "account")
        switch_language(page, "fr")
        assert_accessible(page)
        shot(page, "account-fr")
        switch_language(page, "en")

        page.get_by_role("button", name="Sign out everywhere").click()
        page.wait_for_url("**/accounts/login/")
        assert (
            "You are signed out on every device."
            in page.locator(".messages").inner_text()
        )
        shot(page, "signed-out")

        other.goto("/portal/account/")
        other.wait_for_url("**/accounts/login/?next=/portal/account/")
        assert other.locator(".whoami").count() == 0
        shot(other, "other-browser-signed-out")
    finally:
        other.context.close()


def test_the_locked_sign_in_page_says_how_long_to_wait(page, shot, settings):
    settings.PASSWORD_ATTEMPTS_PER_ACCOUNT = 2
    UserFactory(username="ada", password=PASSWORD)
    for _ in range(2):
        sign_in(page, "ada", "not-the-password")
    shot(page, "wrong-password")

    sign_in(page, "ada")

    alert = page.get_by_role("alert").first.inner_text()
    assert "Sign-in is locked for a while" in alert
    assert "Try again in about 15 minutes" in alert
    assert page.locator(".whoami").count() == 0
    assert_accessible(page)
    shot(page, "locked")
    switch_language(page, "fr")
    page.locator("#id_username").fill("ada")
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name="Connexion").last.click()
    page.wait_for_load_state()
    assert "La connexion est bloquée" in page.get_by_role("alert").first.inner_text()
    assert_accessible(page)
    shot(page, "locked-fr")
