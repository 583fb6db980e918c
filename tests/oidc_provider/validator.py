"""The provider's claims hook: each user's claims, as the test's config says."""

import json

from django.conf import settings
from oauth2_provider.oauth2_validators import OAuth2Validator


def user_claims(username: str) -> dict:
    """The claims the config file gives ``username`` now (read at every request,
    so a test may change them between two sign-ins)."""
    config = json.loads(settings.CONFIG_PATH.read_text(encoding="utf-8"))
    for user in config["users"]:
        if user["username"] == username:
            return dict(user.get("claims", {}))
    return {}


class ClaimsValidator(OAuth2Validator):
    """Adds the configured claims to the ID token and the userinfo answer."""

    # Every configured claim travels with the "profile" scope.
    oidc_claim_scope = None

    def get_additional_claims(self, request):
        claims = user_claims(request.user.username)
        claims.setdefault("preferred_username", request.user.username)
        return claims
