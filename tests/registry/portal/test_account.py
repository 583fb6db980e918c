"""The account page and "sign out everywhere" (registry.portal.account)."""

from __future__ import annotations

import pytest
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from audit.models import AuditEvent
from registry.models import Role, SessionGeneration
from registry.services import identity
from registry.sessions import SESSION_KEY
from tests.factories import AgencyFactory, MembershipFactory, UserFactory

PAGE = "/portal/account/"
PASSWORD = "correct-Horse-battery-9"  # tests.factories.UserFactory's password

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(db):
    city = AgencyFactory(slug="city", name="City Council")
    return MembershipFactory(
        user=UserFactory(username="ada"), agency=city, role=Role.MAINTAINER
    ).user


def device(user) -> Client:
    """A browser signed in through the sign-in form (a real session)."""
    client = Client()
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": PASSWORD}
    )
    assert response.status_code == 302
    return client


def signed_in(client: Client) -> bool:
    return client.get(PAGE).status_code == 200


def test_anonymous_readers_are_sent_to_sign_in(client):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={PAGE}"


def test_the_page_shows_agency_role_and_live_tokens(ada):
    AuthToken.objects.create(user=ada)
    AuthToken.objects.create(user=ada)
    page = device(ada).get(PAGE).content.decode()
    assert '<dd class="account-agency">City Council</dd>' in page
    assert '<dd class="account-role">Maintainer</dd>' in page
    assert '<dd class="account-tokens">2</dd>' in page
    assert "With a password" in page
    assert "Never" in page


def test_the_page_issues_a_constant_number_of_queries(
    ada, django_assert_max_num_queries
):
    client = device(ada)
    for _ in range(2):
        AuthToken.objects.create(user=ada)
    with django_assert_max_num_queries(8) as few:
        client.get(PAGE)
    for _ in range(18):
        AuthToken.objects.create(user=ada)
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        assert '<dd class="account-tokens">20</dd>' in client.get(PAGE).content.decode()
    assert len(many.captured_queries) == len(few.captured_queries)


def test_sign_out_everywhere_ends_every_session_of_the_person_only(ada):
    laptop, phone, tablet = device(ada), device(ada), device(ada)
    other = device(MembershipFactory(user=UserFactory(username="bob")).user)
    token = AuthToken.objects.create(user=ada)[1]

    response = laptop.post(PAGE, {})

    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    page = laptop.get(response["Location"]).content.decode()
    assert "You are signed out on every device." in page
    assert not signed_in(laptop)
    assert not signed_in(phone) and not signed_in(tablet)
    assert signed_in(other)
    # Tokens were kept (the box was not ticked).
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/me/").status_code == 200
    event = AuditEvent.objects.get(action="account.signed_out_everywhere")
    assert event.actor_id == ada.pk
    assert event.payload_data == {"user": "ada", "generation": 1, "tokens_revoked": 0}
    # Signing in again works, in the new generation.
    again = device(ada)
    assert again.session[SESSION_KEY] == 1
    assert signed_in(again)


def test_sign_out_everywhere_can_revoke_the_api_tokens(ada):
    token = AuthToken.objects.create(user=ada)[1]
    AuthToken.objects.create(user=ada)
    client = device(ada)

    response = client.post(PAGE, {"revoke_tokens": "on"}, follow=True)

    assert "2 API tokens were revoked." in response.content.decode()
    assert not AuthToken.objects.filter(user=ada).exists()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/me/").status_code == 401
    event = AuditEvent.objects.get(action="account.signed_out_everywhere")
    assert event.payload_data["tokens_revoked"] == 2


def test_a_session_from_before_the_mechanism_counts_as_generation_zero(ada):
    client = device(ada)
    session = client.session
    del session[SESSION_KEY]
    session.save()
    assert signed_in(client)
    identity.account_sign_out_everywhere(actor=ada)
    assert not signed_in(client)
    assert SessionGeneration.objects.get(user=ada).generation == 1


def test_c7_sign_out_everywhere_refuses_a_post_without_the_csrf_token(ada):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ada)
    assert client.post(PAGE, {}).status_code == 403
    assert not AuditEvent.objects.filter(
        action="account.signed_out_everywhere"
    ).exists()
    assert signed_in(client)


def test_the_nav_links_to_the_account_page(ada):
    page = device(ada).get(PAGE).content.decode()
    assert f'<a href="{PAGE}">Your account</a>' in page
