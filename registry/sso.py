"""Staff single sign-on through their agency's OpenID Connect provider.

mozilla-django-oidc runs the authorization-code flow (state, nonce, PKCE);
this module adapts it to Civitas:

- SSO is on only when ``OIDC_RP_CLIENT_ID`` is set; otherwise its routes
  answer 404 and the backend is not in ``AUTHENTICATION_BACKENDS``.
- The provider's endpoints are the settings', or, where a setting is empty,
  the provider's discovery document (``OIDC_OP_DISCOVERY_URL``), read once
  and kept in the cache for an hour.
- The ID token is RS256, its key taken from the provider's JWKS; its issuer
  (when known) and audience (our client id) are checked, which the library
  leaves to us.
- The claims are the ID token's, overlaid with the userinfo answer's. The
  account is found by the provider's subject (``sub``), never by e-mail
  address, so no local account can be taken over by an identity provider
  that lets people choose their address.
- Who the person becomes (agency and role) is decided by the administrator's
  ``ClaimRule`` rows (``registry.services.identity.account_sso_sign_in``);
  with no matching rule the sign-in is refused, audited, and the sign-in page
  says why.
"""

from __future__ import annotations

import hashlib
import logging

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404
from django.utils.translation import gettext as _
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from config.exceptions import DomainError
from registry.services import identity

LOGGER = logging.getLogger(__name__)

# Settings that the discovery document fills in when they are left empty.
DISCOVERED = {
    "OIDC_OP_ISSUER": "issuer",
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
DISCOVERY_SECONDS = 3600
# Set on the request when the rules refused the person (the message is given).
REFUSED = "_civitas_sso_refused"


def sso_enabled() -> bool:
    """Whether single sign-on is configured (a client id is set)."""
    return bool(settings.OIDC_RP_CLIENT_ID)


def discovery_document() -> dict:
    """The provider's ``/.well-known/openid-configuration``, cached for an hour."""
    url = settings.OIDC_OP_DISCOVERY_URL
    if not url:
        return {}
    key = "oidc-discovery:" + hashlib.sha256(url.encode()).hexdigest()[:32]
    document = cache.get(key)
    if document is None:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
        cache.set(key, document, DISCOVERY_SECONDS)
    return document


def provider_setting(attr: str, *default):
    """A mozilla-django-oidc setting; an empty endpoint comes from discovery."""
    value = import_from_settings(attr, *default)
    if attr in DISCOVERED and not value:
        value = discovery_document().get(DISCOVERED[attr], value)
    return value


def sso_issuer() -> str:
    """The provider's issuer (configured or discovered), or its token endpoint."""
    issuer = provider_setting("OIDC_OP_ISSUER", "")
    return issuer or provider_setting("OIDC_OP_TOKEN_ENDPOINT", "")


class ClaimRuleBackend(OIDCAuthenticationBackend):
    """The OIDC backend whose accounts and roles follow the claim rules."""

    get_settings = staticmethod(provider_setting)

    def verify_token(self, token, **kwargs):
        """The library's signature and nonce check, then issuer and audience."""
        payload = super().verify_token(token, **kwargs)
        self.check_issuer_and_audience(payload)
        return payload

    def check_issuer_and_audience(self, payload: dict) -> None:
        """The token is the provider's (when its issuer is known), and ours."""
        issuer = self.get_settings("OIDC_OP_ISSUER", "")
        if issuer and payload.get("iss") != issuer:
            raise SuspiciousOperation("The ID token's issuer is not the provider.")
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("The ID token was not issued to this client.")

    def get_userinfo(self, access_token, id_token, payload):
        """The ID token's claims, overlaid by the userinfo endpoint's."""
        userinfo = super().get_userinfo(access_token, id_token, payload)
        if userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("The userinfo subject is not the token's.")
        return {**payload, **userinfo}

    def verify_claims(self, claims) -> bool:
        return bool(claims.get("sub"))

    def describe_user_by_claims(self, claims) -> str:
        return f"subject {claims.get('sub')}"

    def filter_users_by_claims(self, claims):
        return get_user_model().objects.filter(
            external_identities__issuer=sso_issuer(),
            external_identities__subject=str(claims["sub"]),
        )

    def create_user(self, claims):
        return self._sign_in(None, claims)

    def update_user(self, user, claims):
        return self._sign_in(user, claims)

    def _sign_in(self, user, claims):
        """Map the claims through the rules; refuse with a message if none fits."""
        try:
            return identity.account_sso_sign_in(
                user=user,
                issuer=sso_issuer(),
                claims=claims,
                provider=settings.OIDC_PROVIDER_NAME,
            )
        except DomainError as error:
            identity.account_sso_refuse(
                issuer=sso_issuer(),
                claims=claims,
                code=error.code,
                reason=error.message,
            )
            setattr(self.request, REFUSED, True)
            messages.error(
                self.request,
                _("Single sign-on refused: %(reason)s") % {"reason": error.message},
            )
            # PermissionDenied stops Django from trying the other backends.
            raise PermissionDenied(error.message) from error


class SignInView(OIDCAuthenticationRequestView):
    """Start the sign-in at the provider (404 when SSO is off)."""

    get_settings = staticmethod(provider_setting)

    def dispatch(self, request, *args, **kwargs):
        if not sso_enabled():
            raise Http404("Single sign-on is not configured.")
        self.OIDC_OP_AUTH_ENDPOINT = provider_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        return super().dispatch(request, *args, **kwargs)

    def __init__(self, *args, **kwargs):
        # The library reads its endpoints here; with SSO off there are none.
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID


class CallbackView(OIDCAuthenticationCallbackView):
    """The provider's answer: sign the person in, or back to the sign-in page."""

    get_settings = staticmethod(provider_setting)

    def dispatch(self, request, *args, **kwargs):
        if not sso_enabled():
            raise Http404("Single sign-on is not configured.")
        return super().dispatch(request, *args, **kwargs)

    def get(self, request):
        """The library's callback; a token or provider failure is a failed sign-in.

        A forged or foreign token (``SuspiciousOperation``) or a provider that
        cannot be reached is logged and sends the person back to the sign-in
        page with a message, never to an error page.
        """
        try:
            return super().get(request)
        except (SuspiciousOperation, requests.RequestException) as error:
            LOGGER.warning("single sign-on failed: %s", error)
            return self.login_failure()

    def login_failure(self):
        if not getattr(self.request, REFUSED, False):
            messages.error(
                self.request,
                _(
                    "Single sign-on did not complete. Try again, or sign in "
                    "with a password."
                ),
            )
        return super().login_failure()
