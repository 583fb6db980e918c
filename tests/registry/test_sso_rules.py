"""Single sign-on claim rules: which agency and role the claims give, or none.

These call the services and the backend directly with claims; the whole flow
against a real provider is ``test_sso_flow``.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.test import RequestFactory

from audit.models import AuditEvent
from config.exceptions import DomainError, PolicyViolation
from registry.models import ClaimRule, ExternalIdentity, Membership, Role
from registry.services import identity
from registry.sso import ClaimRuleBackend
from tests.factories import AgencyFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def sso(settings):
    settings.OIDC_RP_CLIENT_ID = "civitas-portal"
    settings.OIDC_RP_CLIENT_SECRET = "secret"
    settings.OIDC_PROVIDER_NAME = "Agency ID"
    settings.OIDC_OP_DISCOVERY_URL = ""
    settings.OIDC_OP_ISSUER = "https://id.example.gov"
    settings.OIDC_OP_JWKS_ENDPOINT = "https://id.example.gov/jwks"
    settings.OIDC_OP_TOKEN_ENDPOINT = "https://id.example.gov/token"
    settings.OIDC_OP_USER_ENDPOINT = "https://id.example.gov/userinfo"
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://id.example.gov/authorize"
    return settings


@pytest.fixture
def city(db):
    return AgencyFactory(slug="city", name="City Council")


@pytest.fixture
def oversight(db):
    return AgencyFactory(slug="oversight", name="Oversight", is_oversight_body=True)


def rule(agency, claim="agency", value="city", role=Role.MEMBER, priority=0, **kw):
    return ClaimRule.objects.create(
        name=f"{claim}={value}",
        claim=claim,
        value=value,
        agency=agency,
        role=role,
        priority=priority,
        **kw,
    )


ISSUER = "https://id.example.gov"


def sign_in(claims, user=None):
    return identity.account_sso_sign_in(
        user=user, issuer=ISSUER, claims=claims, provider="Agency ID"
    )


def test_a_matching_rule_creates_the_account_and_membership(sso, city):
    chosen = rule(city, role=Role.MAINTAINER)
    claims = {
        "sub": "u-1",
        "agency": "city",
        "email": "ada@city.example.gov",
        "given_name": "Ada",
        "family_name": "Lovelace",
    }

    user = sign_in(claims)

    assert user.username == "ada"  # the address's local part (no preferred name)
    link = ExternalIdentity.objects.get(user=user)
    assert (link.issuer, link.subject) == (ISSUER, "u-1")
    assert link.last_sign_in_at is not None
    assert not user.has_usable_password() and user.is_staff
    assert (user.email, user.first_name, user.last_name) == (
        "ada@city.example.gov",
        "Ada",
        "Lovelace",
    )
    membership = Membership.objects.get(user=user)
    assert (membership.agency, membership.role) == (city, Role.MAINTAINER)
    added = AuditEvent.objects.get(action="membership.added")
    assert added.actor is None
    assert added.payload_data == {
        "user": user.username,
        "role": "maintainer",
        "via": "sso",
        "rule": chosen.pk,
    }
    signed = AuditEvent.objects.get(action="account.sso_signed_in")
    assert (
        signed.payload_data["rule"] == chosen.pk
        and signed.payload_data["subject"] == "u-1"
    )


def test_the_highest_priority_wins_and_ties_go_to_the_older_rule(sso, city, oversight):
    rule(city, role=Role.MEMBER, priority=1)
    winner = rule(
        oversight,
        claim="civitas_role",
        value="reviewer",
        role=Role.REVIEWER,
        priority=5,
    )
    rule(city, claim="civitas_role", value="reviewer", role=Role.MAINTAINER, priority=5)
    user = sign_in({"sub": "u-2", "agency": "city", "civitas_role": "reviewer"})
    membership = Membership.objects.get(user=user)
    assert (membership.agency, membership.role) == (oversight, Role.REVIEWER)
    assert (
        AuditEvent.objects.get(action="account.sso_signed_in").payload_data["rule"]
        == winner.pk
    )


def test_a_list_claim_matches_one_of_its_values_and_matching_is_exact(sso, city):
    rule(city, claim="groups", value="civitas-staff")
    assert sign_in({"sub": "u-3", "groups": ["hr", "civitas-staff"]})
    with pytest.raises(DomainError) as refused:
        sign_in({"sub": "u-4", "groups": ["Civitas-Staff", "civitas-staff-x"]})
    assert refused.value.code == "no_matching_rule"


def test_no_matching_or_only_inactive_rules_refuse_and_write_nothing(sso, city):
    rule(city, value="city", is_active=False)
    users_before = get_user_model().objects.count()
    with pytest.raises(DomainError) as refused:
        sign_in({"sub": "u-5", "agency": "city"})
    assert "no rule of this platform" in refused.value.message
    assert get_user_model().objects.count() == users_before
    assert not AuditEvent.objects.filter(action__startswith="membership.").exists()


def test_the_role_and_agency_follow_the_claims_at_the_next_sign_in(
    sso, city, oversight
):
    rule(city, value="city", role=Role.MEMBER)
    rule(city, claim="civitas_role", value="lead", role=Role.MAINTAINER, priority=3)
    rule(oversight, value="oversight", role=Role.REVIEWER)
    user = sign_in({"sub": "u-6", "agency": "city"})
    assert Membership.objects.get(user=user).role == Role.MEMBER

    same = sign_in({"sub": "u-6", "agency": "city", "civitas_role": "lead"}, user)
    assert same.pk == user.pk
    assert Membership.objects.get(user=user).role == Role.MAINTAINER
    promoted = AuditEvent.objects.get(action="membership.role_changed")
    assert promoted.payload_data["from"] == "member" and promoted.payload_data[
        "to"
    ] == ("maintainer")
    assert promoted.payload_data["via"] == "sso"

    sign_in({"sub": "u-6", "agency": "oversight"}, user)
    membership = Membership.objects.get(user=user)
    assert (membership.agency, membership.role) == (oversight, Role.REVIEWER)
    moved = AuditEvent.objects.filter(action="membership.role_changed").last()
    assert (moved.payload_data["agency_from"], moved.payload_data["agency_to"]) == (
        "city",
        "oversight",
    )


def test_an_unchanged_sign_in_changes_no_membership(sso, city):
    rule(city)
    user = sign_in({"sub": "u-7", "agency": "city"})
    sign_in({"sub": "u-7", "agency": "city"}, user)
    assert AuditEvent.objects.filter(action="membership.added").count() == 1
    assert not AuditEvent.objects.filter(action="membership.role_changed").exists()
    assert AuditEvent.objects.filter(action="account.sso_signed_in").count() == 2


# --- the rules are a platform administrator's ------------------------------------


def test_only_platform_administrators_write_rules(city, admin_user):
    maintainer = MembershipFactory(agency=city, role=Role.MAINTAINER).user
    with pytest.raises(PolicyViolation):
        identity.claim_rule_create(
            actor=maintainer, name="x", claim="agency", value="city", agency=city
        )
    created = identity.claim_rule_create(
        actor=admin_user, name="City staff", claim="agency", value="city", agency=city
    )
    identity.claim_rule_update(actor=admin_user, rule=created, role=Role.MAINTAINER)
    events = list(
        AuditEvent.objects.filter(action__startswith="sso.rule_").values_list(
            "action", flat=True
        )
    )
    assert events == ["sso.rule_created", "sso.rule_changed"]


def test_a_reviewer_rule_must_name_an_oversight_body(city, admin_user):
    with pytest.raises(DomainError) as refused:
        identity.claim_rule_create(
            actor=admin_user,
            name="x",
            claim="agency",
            value="city",
            agency=city,
            role=Role.REVIEWER,
        )
    assert refused.value.code == "invalid_role"


def test_the_admin_shows_the_subject_links_read_only(client, sso, city, admin_user):
    rule(city)
    user = sign_in({"sub": "u-13", "agency": "city", "preferred_username": "cleo"})
    client.force_login(admin_user)
    listing = client.get("/admin/registry/externalidentity/")
    assert listing.status_code == 200 and "u-13" in listing.content.decode()
    link = ExternalIdentity.objects.get(user=user)
    change = client.post(
        f"/admin/registry/externalidentity/{link.pk}/change/", {"subject": "x"}
    )
    assert change.status_code == 403
    assert ExternalIdentity.objects.get(pk=link.pk).subject == "u-13"


def test_rules_are_written_in_the_admin_through_the_service(client, city, admin_user):
    client.force_login(admin_user)
    response = client.post(
        "/admin/registry/claimrule/add/",
        {
            "name": "City staff",
            "claim": "agency",
            "value": "city",
            "agency": city.pk,
            "role": "member",
            "priority": "2",
            "is_active": "on",
        },
    )
    assert response.status_code == 302, response.content
    created = ClaimRule.objects.get()
    assert (created.value, created.priority) == ("city", 2)
    assert AuditEvent.objects.filter(action="sso.rule_created").count() == 1
    maintainer = MembershipFactory(
        agency=city, role=Role.MAINTAINER, user=UserFactory(is_staff=True)
    ).user
    client.force_login(maintainer)
    assert client.get("/admin/registry/claimrule/").status_code == 403
    assert client.get("/admin/registry/externalidentity/").status_code == 403


# --- the backend ---------------------------------------------------------------


def backend_with_request():
    request = RequestFactory().get("/accounts/oidc/callback/")
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    backend = ClaimRuleBackend()
    backend.request = request
    return backend, request


def test_the_backend_finds_accounts_by_issuer_and_subject_never_by_name(sso, city):
    rule(city)
    local = UserFactory(username="ada", email="ada@city.example.gov")
    backend, _request = backend_with_request()
    claims = {
        "sub": "u-8",
        "agency": "city",
        "email": "ada@city.example.gov",
        "preferred_username": "ada",
    }

    # Neither the local account's address nor its username is a match.
    assert not backend.filter_users_by_claims(claims).exists()
    user = backend.create_user(claims)
    assert user.pk != local.pk and user.username == "ada-2"
    assert list(backend.filter_users_by_claims(claims)) == [user]
    assert not backend.filter_users_by_claims({**claims, "sub": "u-9"}).exists()
    # The same subject at another issuer is another person.
    sso.OIDC_OP_ISSUER = "https://other-id.example.gov"
    assert not backend.filter_users_by_claims(claims).exists()


def test_a_deactivated_account_is_refused_whatever_the_claims(sso, city):
    rule(city)
    user = sign_in({"sub": "u-12", "agency": "city"})
    user.is_active = False
    user.save()
    with pytest.raises(DomainError) as refused:
        sign_in({"sub": "u-12", "agency": "city"}, user)
    assert refused.value.code == "account_inactive"
    assert AuditEvent.objects.filter(action="account.sso_signed_in").count() == 1


def test_a_changed_preferred_username_keeps_the_same_account(sso, city):
    rule(city)
    first = sign_in({"sub": "u-11", "agency": "city", "preferred_username": "bob"})
    again = sign_in(
        {"sub": "u-11", "agency": "city", "preferred_username": "robert"}, first
    )
    assert again.pk == first.pk and again.username == "bob"


def test_the_backend_refuses_with_a_message_and_an_audit_event(sso, city):
    rule(city, value="city")
    backend, request = backend_with_request()
    claims = {"sub": "u-10", "agency": "elsewhere", "email": "x@elsewhere.example"}

    with pytest.raises(PermissionDenied):
        backend.create_user(claims)

    [message] = list(get_messages(request))
    assert str(message).startswith("Single sign-on refused: no rule of this platform")
    refused = AuditEvent.objects.get(action="account.sso_refused")
    # Only the claims the rules read are kept, not the e-mail address.
    assert refused.payload_data["claims"] == {"agency": "elsewhere"}
    assert refused.payload_data["subject"] == "u-10"
    assert refused.payload_data["code"] == "no_matching_rule"


def test_the_backend_checks_the_audience_and_the_issuer(sso):
    backend, _request = backend_with_request()
    good = {"iss": "https://id.example.gov", "aud": "civitas-portal", "sub": "s"}
    backend.check_issuer_and_audience(good)
    backend.check_issuer_and_audience({**good, "aud": ["other", "civitas-portal"]})
    for bad in (
        {**good, "aud": "another-client"},
        {**good, "aud": None},
        {**good, "iss": "https://evil.example"},
    ):
        with pytest.raises(SuspiciousOperation):
            backend.check_issuer_and_audience(bad)


def test_sso_routes_answer_404_when_sso_is_off(client, settings):
    settings.OIDC_RP_CLIENT_ID = ""
    assert client.get("/accounts/oidc/authenticate/").status_code == 404
    assert client.get("/accounts/oidc/callback/?code=x&state=y").status_code == 404
    assert "Sign in with" not in client.get("/accounts/login/").content.decode()


def test_the_sign_in_page_offers_the_provider_when_configured(client, sso):
    page = client.get("/accounts/login/?next=/portal/account/").content.decode()
    assert "Sign in with Agency ID" in page
    assert 'href="/accounts/oidc/authenticate/?next=%2Fportal%2Faccount%2F"' in page
