"""Two agencies, people in every role, and API clients holding their tokens."""

from __future__ import annotations

import pytest
from knox.models import AuthToken
from rest_framework.test import APIClient

from registry.models import Role
from tests.factories import AgencyFactory, MembershipFactory, UserFactory


@pytest.fixture
def agency_a(db):
    return AgencyFactory(slug="city-a", name="City A", jurisdiction="FR")


@pytest.fixture
def agency_b(db):
    return AgencyFactory(slug="region-b", name="Region B", jurisdiction="DE-BY")


@pytest.fixture
def oversight_body(db):
    return AgencyFactory(
        slug="oversight",
        name="Oversight Office",
        jurisdiction="FR",
        is_oversight_body=True,
    )


def _person(username, agency, role):
    return MembershipFactory(
        user=UserFactory(username=username), agency=agency, role=role
    ).user


@pytest.fixture
def member_a(agency_a):
    return _person("alice", agency_a, Role.MEMBER)


@pytest.fixture
def maintainer_a(agency_a):
    return _person("mara", agency_a, Role.MAINTAINER)


@pytest.fixture
def member_b(agency_b):
    return _person("bob", agency_b, Role.MEMBER)


@pytest.fixture
def reviewer(oversight_body):
    return _person("rita", oversight_body, Role.REVIEWER)


@pytest.fixture
def platform_admin(db):
    return UserFactory(username="root", is_superuser=True, is_staff=True)


def token_client(user) -> APIClient:
    """An API client authenticated by a real knox token of ``user``."""
    _, token = AuthToken.objects.create(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture
def api_a(member_a):
    return token_client(member_a)


@pytest.fixture
def api_maintainer_a(maintainer_a):
    return token_client(maintainer_a)


@pytest.fixture
def api_b(member_b):
    return token_client(member_b)


@pytest.fixture
def api_reviewer(reviewer):
    return token_client(reviewer)


@pytest.fixture
def api_admin(platform_admin):
    return token_client(platform_admin)
