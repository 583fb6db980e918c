"""The portal's frame: sign-in, the language switcher, a phone-width screen."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PASSWORD, assert_accessible, sign_in, switch_language
from tests.factories import MembershipFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_sign_in_page_is_accessible_in_both_languages(page, shot):
    page.goto("/accounts/login/")
    assert page.get_by_role("heading", level=1).inner_text() == "Sign in"
    assert_accessible(page)
    shot(page, "sign-in-en")
    switch_language(page, "fr")
    assert page.get_by_role("heading", level=1).inner_text() == "Connexion"
    assert_accessible(page)
    shot(page, "sign-in-fr")


def test_sign_in_and_out(page, shot):
    user = UserFactory(username="ada", password=PASSWORD)
    MembershipFactory(user=user)
    sign_in(page, "ada")
    assert page.locator(".whoami").inner_text().startswith("ada")
    shot(page, "signed-in")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    page.goto("/accounts/login/")
    assert page.locator(".whoami").count() == 0
    assert page.get_by_role("heading", level=1).inner_text() == "Sign in"


def test_wrong_password_says_so_and_signs_nobody_in(page, shot):
    UserFactory(username="ada", password=PASSWORD)
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").last.click()
    alert = page.get_by_role("alert")
    assert "correct username and password" in alert.inner_text()
    assert page.locator(".whoami").count() == 0
    shot(page, "wrong-password")


def test_phone_width_has_no_horizontal_scroll(phone, shot):
    phone.goto("/accounts/login/")
    overflow = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    shot(phone, "sign-in-phone")
