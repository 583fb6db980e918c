"""Personal API tokens and the ``me/`` endpoint (SECURITY C5)."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from audit.models import AuditEvent
from registry.api.tokens import PasswordAttemptThrottle
from tests.factories import UserFactory
from tests.registry.api_catalogue import _fast_password_hashing  # noqa: F401
from tests.registry.conftest import token_client

API = "/api/v1"
PASSWORD = "correct-Horse-battery-9"  # tests.factories.UserFactory's password


@pytest.fixture(autouse=True)
def _fresh_throttles(db):
    """Password attempts are counted per address in the cache; start each test at 0."""
    cache.clear()
    yield
    cache.clear()


def basic(username: str, password: str = PASSWORD) -> APIClient:
    client = APIClient()
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    return client


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


def test_c5_password_creates_a_token_shown_once_and_stores_a_digest(member_a):
    response = basic("alice").post(f"{API}/auth/tokens/")
    assert response.status_code == 201, response.content
    body = response.json()
    secret = body["token"]
    assert secret.startswith(body["token_key"]) and len(body["token_key"]) == 15
    assert body["expiry"]
    # The database keeps a digest, never the secret.
    stored = AuthToken.objects.get(user=member_a)
    assert secret not in (stored.digest, stored.token_key)
    # The secret works, and the listing never shows it again.
    listed = bearer(secret).get(f"{API}/auth/tokens/")
    assert listed.status_code == 200
    assert secret not in listed.content.decode()
    (row,) = listed.json()
    assert row["token_key"] == body["token_key"]
    assert row["is_current"] is True
    assert set(row) == {"token_key", "created", "expiry", "is_current"}
    event = AuditEvent.objects.get(action="token.created")
    assert event.object_id == body["token_key"]


def test_session_creates_a_token(member_a):
    client = APIClient(enforce_csrf_checks=False)
    client.force_login(member_a)
    response = client.post(f"{API}/auth/tokens/")
    assert response.status_code == 201


def test_a_token_cannot_mint_another(api_a):
    response = api_a.post(f"{API}/auth/tokens/")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_wrong_password_is_401(member_a):
    response = basic("alice", "wrong-password").post(f"{API}/auth/tokens/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_password_attempts_are_throttled_before_authentication(member_a, monkeypatch):
    monkeypatch.setattr(PasswordAttemptThrottle, "THROTTLE_RATES", {"anon": "3/min"})
    statuses = [
        basic("alice", "wrong-password").post(f"{API}/auth/tokens/").status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    refused = basic("alice").post(f"{API}/auth/tokens/")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert "Retry-After" in refused.headers


def test_c5_revoke_then_the_token_answers_401(member_a):
    secret = basic("alice").post(f"{API}/auth/tokens/").json()["token"]
    client = bearer(secret)
    assert client.get(f"{API}/me/").status_code == 200
    response = client.delete(f"{API}/auth/tokens/{secret[:15]}/")
    assert response.status_code == 204
    replay = client.get(f"{API}/me/")
    assert replay.status_code == 401
    assert replay.json()["code"] == "authentication_failed"
    assert AuditEvent.objects.filter(action="token.revoked").count() == 1


def test_another_users_token_cannot_be_revoked(api_b, member_a):
    _, secret = AuthToken.objects.create(member_a)
    response = api_b.delete(f"{API}/auth/tokens/{secret[:15]}/")
    assert response.status_code == 404
    assert bearer(secret).get(f"{API}/me/").status_code == 200


def test_c5_expired_token_answers_401(member_a):
    instance, secret = AuthToken.objects.create(member_a)
    AuthToken.objects.filter(pk=instance.pk).update(
        expiry=timezone.now() - timedelta(seconds=1)
    )
    response = bearer(secret).get(f"{API}/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_expired_tokens_are_not_listed(member_a):
    old, _ = AuthToken.objects.create(member_a)
    AuthToken.objects.filter(pk=old.pk).update(
        expiry=timezone.now() - timedelta(days=1)
    )
    live = token_client(member_a)
    rows = live.get(f"{API}/auth/tokens/").json()
    assert old.token_key not in {row["token_key"] for row in rows}
    assert len(rows) == 1


@pytest.mark.parametrize(
    "header", ["Token", "Token not-a-real-token-at-all", "Token a b", "Bearer x"]
)
def test_c5_missing_or_invalid_token_is_401(db, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(f"{API}/models/")
    assert response.status_code == 401
    assert set(response.json()) == {"code", "message"}


def test_me(api_a, api_reviewer, api_admin):
    me = api_a.get(f"{API}/me/").json()
    assert me == {
        "username": "alice",
        "email": "alice@example.gov",
        "role": "member",
        "is_oversight": False,
        "is_platform_admin": False,
        "agency": {"slug": "city-a", "name": "City A"},
    }
    reviewer = api_reviewer.get(f"{API}/me/").json()
    assert (reviewer["role"], reviewer["is_oversight"]) == ("reviewer", True)
    admin = api_admin.get(f"{API}/me/").json()
    assert (admin["role"], admin["is_platform_admin"], admin["agency"]) == (
        "admin",
        True,
        None,
    )


def test_user_without_membership_sees_only_public_objects(db):
    outsider = UserFactory(username="outsider")
    client = token_client(outsider)
    assert client.get(f"{API}/me/").json()["role"] is None
    assert client.get(f"{API}/models/").json()["results"] == []
