"""Permission classes of the catalogue API.

They answer "may this kind of caller reach this endpoint at all"; who may
change which object is decided by ``registry.services``, and which objects a
caller sees by the selectors.
"""

from __future__ import annotations

from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission


class IsPasswordAuthenticated(BasePermission):
    """Signed in with a password (HTTP Basic) or a browser session, not a token.

    A token never mints another token, so revoking a stolen token ends the
    thief's access.
    """

    message = (
        "Create tokens with your username and password (HTTP Basic) or a "
        "signed-in session, not with another token."
    )

    def has_permission(self, request, view) -> bool:
        return bool(
            request.user
            and request.user.is_authenticated
            and isinstance(
                request.successful_authenticator,
                BasicAuthentication | SessionAuthentication,
            )
        )
