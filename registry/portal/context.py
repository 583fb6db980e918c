"""What every portal page knows about the person reading it (a context processor)."""

from __future__ import annotations

from registry.models import Role, user_membership, user_role


def portal(request) -> dict:
    """The reader's role and agency, for the navigation of ``portal/base.html``.

    ``portal_role`` is ``None`` for the public (and for an account without a
    membership); the pages themselves check permissions, the navigation only
    hides what a reader could not open.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"portal_role": None, "portal_agency": None}
    role = user_role(user)
    membership = user_membership(user)
    return {
        "portal_role": role,
        "portal_agency": membership.agency if membership else None,
        "portal_is_oversight": role in (Role.REVIEWER, Role.ADMIN),
        "portal_is_agency_staff": role in (Role.MEMBER, Role.MAINTAINER),
    }
