"""The portal's side of the SSO tests: start the provider for the live server,
configure the portal for it, and sign in through it with plain HTTP requests.

Test modules wrap ``provider_for`` and ``configure_portal`` in their own
fixtures (``oidc_provider`` module-scoped, ``sso_settings`` per test).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import requests

from tests.oidc_provider.process import Provider, running_provider

# The provider's people: Ada is a city maintainer, Rémi has no agency claim.
PROVIDER_USERS = [
    {
        "username": "ada",
        "password": "ada-provider-password-1",
        "claims": {
            "email": "ada@city.example.gov",
            "given_name": "Ada",
            "family_name": "Lovelace",
            "agency": "city",
            "civitas_role": "lead",
        },
    },
    {
        "username": "remi",
        "password": "remi-provider-password-1",
        "claims": {"email": "remi@elsewhere.example", "agency": "elsewhere"},
    },
]


def provider_for(live_server) -> Iterator[Provider]:
    """The provider, in its own process, knowing the live portal's callback."""
    with running_provider(
        redirect_uri=f"{live_server.url}/accounts/oidc/callback/",
        users=[dict(user) for user in PROVIDER_USERS],
    ) as provider:
        yield provider


def configure_portal(settings, oidc_provider: Provider) -> Provider:
    """The portal configured for the provider (SSO on, its backend added)."""
    for name, value in oidc_provider.sso_settings().items():
        setattr(settings, name, value)
    settings.AUTHENTICATION_BACKENDS = [
        *settings.AUTHENTICATION_BACKENDS,
        "registry.sso.ClaimRuleBackend",
    ]
    # Each test starts with the people's original claims.
    for user in PROVIDER_USERS:
        oidc_provider.set_claims(user["username"], dict(user["claims"]))
    return oidc_provider


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of a page's form (the provider's consent form)."""
    fields = {}
    for tag in re.findall(r"<input[^>]*>", page):
        if 'type="hidden"' not in tag:
            continue
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            fields[name.group(1)] = html.unescape(value.group(1) if value else "")
    return fields


def sso_sign_in(
    portal: str, username: str, password: str, *, next_path: str = "/portal/account/"
) -> tuple[requests.Session, requests.Response]:
    """Sign in through the provider as a browser would, with plain HTTP requests:
    the portal's SSO link, the provider's sign-in form, its consent form."""
    session = requests.Session()
    login = session.get(f"{portal}/accounts/oidc/authenticate/?next={next_path}")
    assert "Sign in to your agency" in login.text, login.text
    consent = session.post(
        login.url,
        data={
            **hidden_fields(login.text),
            "username": username,
            "password": password,
        },
        headers={"Referer": login.url},
    )
    assert "Authorize" in consent.text, consent.text
    landed = session.post(
        consent.url,
        data={**hidden_fields(consent.text), "allow": "Authorize"},
        headers={"Referer": consent.url},
    )
    return session, landed


def city_claim_rules():
    """The City Council and the two rules the provider's users match.

    Every "agency: city" claim signs in as a member; a "civitas_role: lead"
    claim, of higher priority, as a maintainer.
    """
    from registry.models import ClaimRule
    from tests.factories import AgencyFactory

    city = AgencyFactory(slug="city", name="City Council")
    ClaimRule.objects.create(
        name="City staff", claim="agency", value="city", agency=city, role="member"
    )
    ClaimRule.objects.create(
        name="City leads",
        claim="civitas_role",
        value="lead",
        agency=city,
        role="maintainer",
        priority=10,
    )
    return city
