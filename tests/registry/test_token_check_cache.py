"""A remembered token check never outlives what decided it (registry/read_cache.py).

Real commits (``transaction=True``): inside a transaction nothing is remembered.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from registry import read_cache
from registry.models import Membership, Role, Visibility
from tests.factories import ModelVersionFactory
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db(transaction=True)

LICENCES = "/api/v1/licences/"


@pytest.fixture(autouse=True)
def fresh_cache():
    read_cache.clear()
    yield
    read_cache.clear()


def _token_queries(client) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        status = client.get(LICENCES).status_code
    return status, [q["sql"] for q in queries if "knox_authtoken" in q["sql"]]


def test_a_second_request_reuses_the_check_without_the_token_query(member_a):
    client = token_client(member_a)
    assert _token_queries(client)[0] == 200
    status, token_queries = _token_queries(client)
    assert status == 200
    assert token_queries == []
    # A wrong token is never taken for a remembered one.
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 64)
    assert client.get(LICENCES).status_code == 401


def test_a_revoked_token_is_refused_on_the_next_request(member_a):
    client = token_client(member_a)
    assert client.get(LICENCES).status_code == 200
    AuthToken.objects.filter(user=member_a).delete()
    assert client.get(LICENCES).status_code == 401


def test_a_deactivated_user_is_refused_on_the_next_request(member_a):
    client = token_client(member_a)
    assert client.get(LICENCES).status_code == 200
    type(member_a).objects.filter(pk=member_a.pk).update(is_active=False)
    assert client.get(LICENCES).status_code == 401


def test_a_role_change_shows_on_the_next_request(agency_a, agency_b, member_b):
    hidden = ModelVersionFactory(
        model__agency=agency_a, model__visibility=Visibility.PRIVATE
    )
    client = token_client(member_b)
    url = f"/api/v1/model-versions/{hidden.pk}/"
    assert client.get(url).status_code == 404
    Membership.objects.filter(user=member_b).update(role=Role.REVIEWER)
    assert client.get(url).status_code == 200
    Membership.objects.filter(user=member_b).update(role=Role.MEMBER)
    assert client.get(url).status_code == 404


def test_a_remembered_token_is_refused_once_it_expires(member_a):
    _, token = AuthToken.objects.create(member_a, expiry=timedelta(seconds=2))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(LICENCES).status_code == 200
    assert _token_queries(client) == (200, [])  # remembered
    deadline = AuthToken.objects.get(user=member_a).expiry
    time.sleep(max((deadline - timezone.now()).total_seconds(), 0) + 0.2)
    assert client.get(LICENCES).status_code == 401
    assert not AuthToken.objects.filter(user=member_a).exists()


def test_nothing_is_remembered_with_the_cache_off(member_a, settings):
    settings.CIVITAS_READ_CACHE_ENTRIES = 0
    client = token_client(member_a)
    assert client.get(LICENCES).status_code == 200
    status, token_queries = _token_queries(client)
    assert status == 200
    assert len(token_queries) == 1
