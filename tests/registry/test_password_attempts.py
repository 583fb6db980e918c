"""Passwords only where a token is created, counted before they are checked
(SECURITY C14), and rate limits that hold across processes (SECURITY C8)."""

from __future__ import annotations

import base64

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.registry.api_catalogue import _fast_password_hashing  # noqa: F401
from tests.test_route_coverage import PUBLIC, ROUTES, _methods

API = "/api/v1"
PASSWORD = "correct-Horse-battery-9"  # tests.factories.UserFactory's password


@pytest.fixture(autouse=True)
def _fresh_attempts(db):
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def few_attempts(settings):
    settings.PASSWORD_ATTEMPTS_PER_ACCOUNT = 3
    settings.PASSWORD_ATTEMPTS_PER_ADDRESS = 5
    settings.PASSWORD_LOCKOUT_SECONDS = 600
    return settings


def basic(username: str, password: str = PASSWORD, **extra) -> APIClient:
    client = APIClient(**extra)
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    return client


def create_token(username: str, password: str = PASSWORD, **extra):
    return basic(username, password, **extra).post(f"{API}/auth/tokens/")


# --- HTTP Basic is accepted on token creation only ---------------------------


def test_c14_basic_is_refused_on_every_route_but_token_creation(
    member_a, few_attempts
):
    refused = {
        "code": "basic_refused",
        "message": (
            "HTTP Basic is accepted only by POST /api/v1/auth/tokens/, to "
            "create a token; send 'Authorization: Token <token>' here."
        ),
    }
    checked = 0
    for path, pattern in ROUTES:
        for method in _methods(pattern.callback):
            if (path, method) == (f"{API}/auth/tokens/", "post"):
                continue
            for password in (PASSWORD, "wrong-password"):
                response = getattr(basic("alice", password), method)(path)
                where = f"{method.upper()} {path}"
                assert response.status_code == 401, where
                if path in PUBLIC:  # rendered by the route's own renderer
                    continue
                assert response.json() == refused, where
                assert response.headers["WWW-Authenticate"] == "Token", where
                checked += 1
    assert checked > 40
    # No password was checked: the account has every attempt left.
    assert create_token("alice").status_code == 201


def test_c14_basic_is_refused_on_token_list_and_revoke_even_with_a_session(member_a):
    client = basic("alice")
    client.force_login(member_a)
    assert client.get(f"{API}/auth/tokens/").status_code == 401
    assert client.delete(f"{API}/auth/tokens/abcdefabcdefabc/").status_code == 401
    assert client.get("/api/schema/").status_code == 401
    # Without the Basic header the session works.
    session = APIClient()
    session.force_login(member_a)
    assert session.get(f"{API}/auth/tokens/").status_code == 200


# --- Attempts per account and per address, before the password answers ------


def test_c14_a_locked_account_answers_the_same_for_right_and_wrong_password(
    member_a, few_attempts
):
    statuses = [create_token("alice", "wrong-password").status_code for _ in range(3)]
    assert statuses == [401, 401, 401]

    right = create_token("alice")
    wrong = create_token("alice", "wrong-password")

    assert right.status_code == wrong.status_code == 429
    assert right.json() == wrong.json()
    assert right.json()["code"] == "account_locked"
    assert 0 < int(right.headers["Retry-After"]) <= 600
    assert "WWW-Authenticate" not in right.headers


def test_c14_three_hundred_guesses_hit_429_well_before_300(member_a, settings):
    settings.PASSWORD_ATTEMPTS_PER_ADDRESS = 1000  # the account lock alone
    statuses = []
    for _ in range(300):
        statuses.append(create_token("alice", "wrong-password").status_code)
        if statuses[-1] == 429:
            break
    assert statuses == [401] * 10 + [429]  # PASSWORD_ATTEMPTS_PER_ACCOUNT=10


def test_c14_unknown_usernames_lock_like_real_ones(db, few_attempts):
    for _ in range(3):
        assert create_token("nobody-here", "x").status_code == 401
    assert create_token("nobody-here", "x").json()["code"] == "account_locked"


def test_c14_a_successful_sign_in_gives_its_attempt_back(member_a, few_attempts):
    for _ in range(2):
        assert create_token("alice", "wrong-password").status_code == 401
    for _ in range(3):
        assert create_token("alice").status_code == 201
    assert create_token("alice", "wrong-password").status_code == 401
    assert create_token("alice", "wrong-password").status_code == 429


def test_c14_an_address_is_locked_across_usernames(db, few_attempts):
    statuses = [create_token(f"user-{n}", "x").status_code for n in range(6)]
    assert statuses == [401] * 5 + [429]
    response = create_token("user-9", "x")
    assert response.json()["code"] == "address_locked"
    # Another address still has its attempts.
    elsewhere = create_token("user-9", "x", REMOTE_ADDR="192.0.2.7")
    assert elsewhere.status_code == 401


def test_c8_a_spoofed_forwarded_for_does_not_reset_the_address(db, few_attempts):
    statuses = [
        create_token(f"u{n}", "x", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code
        for n in range(7)
    ]
    assert statuses == [401] * 5 + [429] * 2


def test_c14_ipv6_addresses_count_by_their_64_block(db, few_attempts):
    for n in range(5):
        create_token(f"u{n}", "x", REMOTE_ADDR=f"2001:db8::{n + 1}")
    response = create_token("u9", "x", REMOTE_ADDR="2001:db8::ffff:1")
    assert response.json()["code"] == "address_locked"


def _admin_login(client, username: str, password: str):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
    )


def test_c14_the_admin_login_is_locked_the_same_way(
    client, platform_admin, few_attempts
):
    for _ in range(3):
        response = _admin_login(client, "root", "wrong-password")
        assert response.status_code == 200  # the form, with its error
    right = _admin_login(client, "root", PASSWORD)
    wrong = _admin_login(client, "root", "wrong-password")
    assert right.status_code == wrong.status_code == 429
    assert right.content == wrong.content
    assert b"Sign-in locked" in right.content
    assert int(right.headers["Retry-After"]) > 0
    # The account is the same one the API counts.
    assert create_token("root").json()["code"] == "account_locked"


def test_c14_the_admin_login_still_signs_in(client, platform_admin, few_attempts):
    response = _admin_login(client, "root", PASSWORD)
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
