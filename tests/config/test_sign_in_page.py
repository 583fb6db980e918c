"""The portal's sign-in page: password attempts are bounded, CSRF is required,
and the session cookie follows the deployment's decisions (docs/portal/identity.md).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client

from tests.conftest import ROOT, process_env
from tests.factories import MembershipFactory, UserFactory

PASSWORD = "correct-Horse-battery-9"  # tests.factories.UserFactory's password
LOGIN = "/accounts/login/"


@pytest.fixture(autouse=True)
def _fresh_attempts(db):
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def ada(db):
    return MembershipFactory(user=UserFactory(username="ada")).user


@pytest.fixture
def few_attempts(settings):
    settings.PASSWORD_ATTEMPTS_PER_ACCOUNT = 3
    settings.PASSWORD_ATTEMPTS_PER_ADDRESS = 20
    settings.PASSWORD_LOCKOUT_SECONDS = 600


def post_login(client, username, password):
    return client.post(LOGIN, {"username": username, "password": password})


def test_c14_the_portal_form_is_locked_after_the_limit_with_429_and_a_readable_page(
    client, ada, few_attempts
):
    for _ in range(3):
        wrong = post_login(client, "ada", "wrong-password")
        assert wrong.status_code == 200
        assert "correct username and password" in wrong.content.decode()

    locked = post_login(client, "ada", PASSWORD)

    assert locked.status_code == 429
    assert 0 < int(locked["Retry-After"]) <= 600
    page = locked.content.decode()
    assert "<h1>Sign in</h1>" in page  # the portal's own page, not a bare error
    assert "Sign-in is locked for a while" in page
    assert "Too many sign-in attempts for this account" in page
    assert "Try again in about 10 minutes. Your password was not checked." in page
    # The right password did not sign anyone in.
    assert "_auth_user_id" not in client.session


def test_c14_the_locked_page_speaks_french(client, ada, few_attempts):
    for _ in range(3):
        post_login(client, "ada", "wrong-password")
    client.cookies[django_settings.LANGUAGE_COOKIE_NAME] = "fr"
    locked = post_login(client, "ada", PASSWORD)
    assert locked.status_code == 429
    assert "Trop de tentatives de connexion pour ce compte" in locked.content.decode()


def test_c14_the_portal_form_locks_an_address_across_usernames(client, db, settings):
    settings.PASSWORD_ATTEMPTS_PER_ADDRESS = 4
    statuses = [post_login(client, f"user-{n}", "x").status_code for n in range(5)]
    assert statuses == [200] * 4 + [429]
    assert (
        "Too many sign-in attempts for this address"
        in post_login(client, "user-9", "x").content.decode()
    )


def test_a_successful_sign_in_still_works_below_the_limit(client, ada, few_attempts):
    post_login(client, "ada", "wrong-password")
    signed_in = post_login(client, "ada", PASSWORD)
    assert signed_in.status_code == 302
    assert client.session["_auth_user_id"] == str(ada.pk)


# --- CSRF ------------------------------------------------------------------------


def test_c7_the_sign_in_form_refuses_a_post_without_the_csrf_token(ada):
    client = Client(enforce_csrf_checks=True)
    response = post_login(client, "ada", PASSWORD)
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session
    # With the token from the form, the same sign-in succeeds.
    client.get(LOGIN)
    token = client.cookies[django_settings.CSRF_COOKIE_NAME].value
    response = client.post(
        LOGIN, {"username": "ada", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302


def test_c7_sign_out_refuses_a_post_without_the_csrf_token(ada):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ada)
    assert client.post("/accounts/logout/").status_code == 403
    assert client.session.get("_auth_user_id") == str(ada.pk)
    # A GET never signs out (Django's LogoutView answers 405).
    assert client.get("/accounts/logout/").status_code == 405
    assert client.session.get("_auth_user_id") == str(ada.pk)


# --- cookie and session settings ---------------------------------------------


def test_c7_session_cookies_are_http_only_same_site_and_end_with_the_browser(
    client, ada
):
    response = post_login(client, "ada", PASSWORD)
    cookie = response.cookies[django_settings.SESSION_COOKIE_NAME]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["max-age"] == ""  # no lifetime: it ends with the browser
    assert client.session.get_expiry_age() == 8 * 3600


def _settings_value(name: str, **env: str) -> str:
    code = (
        "import django, os;"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings');"
        "django.setup();"
        f"from django.conf import settings; print(settings.{name})"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=process_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("https", ["true", "false"])
def test_c7_secure_cookies_follow_civitas_https(https):
    expected = "True" if https == "true" else "False"
    for name in ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"):
        assert _settings_value(name, CIVITAS_HTTPS=https) == expected


def test_sso_is_off_unless_a_client_id_is_set():
    backends = "AUTHENTICATION_BACKENDS"
    assert "registry.sso.ClaimRuleBackend" not in _settings_value(
        backends, OIDC_RP_CLIENT_ID=""
    )
    assert "registry.sso.ClaimRuleBackend" in _settings_value(
        backends, OIDC_RP_CLIENT_ID="civitas"
    )
