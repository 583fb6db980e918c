"""API token authentication: one query per request; expired tokens refused, purged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIRequestFactory

from config.authentication import TokenAuthentication
from registry.models import user_membership
from tests.factories import UserFactory
from workers.tasks import token_purge

pytestmark = pytest.mark.django_db


def _authenticate(secret: str):
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Token {secret}")
    return TokenAuthentication().authenticate(request)


def test_token_user_and_membership_come_in_one_query(member_a):
    _, secret = AuthToken.objects.create(member_a)
    with CaptureQueriesContext(connection) as queries:
        user, _token = _authenticate(secret)
        membership = user_membership(user)
    assert len(queries) == 1
    assert membership.agency.slug == "city-a" and membership.user_id == member_a.pk


def test_a_user_without_membership_costs_no_second_query():
    user = UserFactory(username="nobody")
    _, secret = AuthToken.objects.create(user)
    with CaptureQueriesContext(connection) as queries:
        found, _token = _authenticate(secret)
        assert user_membership(found) is None
    assert len(queries) == 1


def test_an_expired_token_is_refused_and_deleted(member_a):
    token, secret = AuthToken.objects.create(member_a)
    AuthToken.objects.filter(pk=token.pk).update(expiry=timezone.now() - timedelta(1))
    with pytest.raises(AuthenticationFailed):
        _authenticate(secret)
    assert not AuthToken.objects.filter(pk=token.pk).exists()


def test_other_expired_tokens_wait_for_the_hourly_purge(member_a, settings):
    live, secret = AuthToken.objects.create(member_a)
    stale, _ = AuthToken.objects.create(member_a)
    AuthToken.objects.filter(pk=stale.pk).update(expiry=timezone.now() - timedelta(1))
    user, _token = _authenticate(secret)
    assert user == member_a
    assert AuthToken.objects.filter(pk=stale.pk).exists()
    assert token_purge() == 1
    assert list(AuthToken.objects.values_list("pk", flat=True)) == [live.pk]
    entry = settings.CELERY_BEAT_SCHEDULE["token-purge"]
    assert entry["task"] == "civitas.token_purge"
    assert settings.CELERY_TASK_ROUTES["civitas.token_purge"]["queue"] == (
        settings.CELERY_HOUSEKEEPING_QUEUE
    )


def test_a_wrong_secret_with_a_known_key_is_refused(member_a):
    _, secret = AuthToken.objects.create(member_a)
    forged = secret[:15] + ("0" if secret[15] != "0" else "1") + secret[16:]
    with pytest.raises(AuthenticationFailed):
        _authenticate(forged)
