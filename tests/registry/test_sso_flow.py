"""The whole single sign-on flow against a real OpenID Connect provider.

django-oauth-toolkit's provider runs in a second process
(``tests.oidc_provider``); the portal runs on pytest-django's live server.
Plain HTTP requests play the browser; the Playwright test is
``tests/e2e/test_oidc.py``.
"""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from registry.models import Membership, Role
from tests.oidc_provider.portal import (
    PROVIDER_USERS,
    city_claim_rules,
    configure_portal,
    provider_for,
    sso_sign_in,
)

pytestmark = pytest.mark.django_db(transaction=True)

ADA, REMI = PROVIDER_USERS


@pytest.fixture(scope="module")
def oidc_provider(live_server):
    yield from provider_for(live_server)


@pytest.fixture
def sso_settings(settings, oidc_provider):
    return configure_portal(settings, oidc_provider)


@pytest.fixture
def rules(db):
    return city_claim_rules()


def test_sso_signs_in_with_the_mapped_agency_and_role(live_server, sso_settings, rules):
    _session, landed = sso_sign_in(live_server.url, ADA["username"], ADA["password"])

    assert landed.url == f"{live_server.url}/portal/account/"
    assert landed.status_code == 200
    assert "City Council" in landed.text and "Maintainer" in landed.text
    membership = Membership.objects.select_related("user").get(agency=rules)
    assert membership.role == Role.MAINTAINER
    assert membership.user.email == "ada@city.example.gov"
    signed = AuditEvent.objects.get(action="account.sso_signed_in")
    assert signed.payload_data["provider"] == "Agency ID"


def test_the_role_changes_when_the_claims_change(live_server, sso_settings, rules):
    sso_sign_in(live_server.url, ADA["username"], ADA["password"])
    sso_settings.set_claims("ada", {**ADA["claims"], "civitas_role": "clerk"})

    _session, landed = sso_sign_in(live_server.url, ADA["username"], ADA["password"])

    assert "Member" in landed.text and "Maintainer" not in landed.text
    assert Membership.objects.get(agency=rules).role == Role.MEMBER
    changed = AuditEvent.objects.get(action="membership.role_changed")
    assert (changed.payload_data["from"], changed.payload_data["to"]) == (
        "maintainer",
        "member",
    )


def test_no_matching_rule_is_refused_with_a_clear_message(
    live_server, sso_settings, rules
):
    session, landed = sso_sign_in(live_server.url, REMI["username"], REMI["password"])

    assert landed.url.startswith(f"{live_server.url}/accounts/login/")
    assert "Single sign-on refused: no rule of this platform" in landed.text
    assert session.get(f"{live_server.url}/portal/account/").url.startswith(
        f"{live_server.url}/accounts/login/"
    )
    refused = AuditEvent.objects.get(action="account.sso_refused")
    assert refused.payload_data["claims"] == {"agency": "elsewhere"}
    assert not Membership.objects.exists()


def test_a_token_from_another_issuer_is_refused(
    live_server, sso_settings, rules, settings
):
    settings.OIDC_OP_ISSUER = "https://another-provider.example"

    _session, landed = sso_sign_in(live_server.url, ADA["username"], ADA["password"])

    assert landed.url.startswith(f"{live_server.url}/accounts/login/")
    assert "Single sign-on did not complete." in landed.text
    assert not Membership.objects.exists()
    assert not AuditEvent.objects.filter(action="account.sso_signed_in").exists()


def test_a_wrong_client_secret_is_a_failed_sign_in_not_an_error_page(
    live_server, sso_settings, rules, settings
):
    settings.OIDC_RP_CLIENT_SECRET = "not-the-secret"

    _session, landed = sso_sign_in(live_server.url, ADA["username"], ADA["password"])

    assert landed.status_code == 200
    assert "Single sign-on did not complete." in landed.text
    assert not Membership.objects.exists()


def test_endpoints_can_come_from_the_discovery_document(
    live_server, sso_settings, rules, settings
):
    settings.OIDC_OP_DISCOVERY_URL = (
        f"{sso_settings.issuer}/.well-known/openid-configuration"
    )
    for name in ("ISSUER", "AUTHORIZATION_ENDPOINT", "TOKEN_ENDPOINT"):
        setattr(settings, f"OIDC_OP_{name}", "")
    settings.OIDC_OP_USER_ENDPOINT = settings.OIDC_OP_JWKS_ENDPOINT = ""

    _session, landed = sso_sign_in(live_server.url, ADA["username"], ADA["password"])

    assert landed.url == f"{live_server.url}/portal/account/"
    assert Membership.objects.get(agency=rules).role == Role.MAINTAINER
