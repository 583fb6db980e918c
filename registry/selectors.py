"""Reads that encode who may see what.

Roles come from the person's one ``Membership``; a Django superuser is a
platform administrator. The membership is fetched once per user object and
cached on it, so a request asks the database at most once.
"""

from __future__ import annotations

from registry.models import Membership, Role

_CACHE_ATTR = "_civitas_membership"


def user_membership(user) -> Membership | None:
    """The user's membership (with its agency), or None for outsiders."""
    if user is None or not user.is_authenticated:
        return None
    if not hasattr(user, _CACHE_ATTR):
        setattr(
            user,
            _CACHE_ATTR,
            Membership.objects.select_related("agency").filter(user_id=user.pk).first(),
        )
    return getattr(user, _CACHE_ATTR)


def user_role(user) -> str | None:
    """The user's role name, ``admin`` for superusers, None for outsiders."""
    if user is not None and user.is_authenticated and user.is_superuser:
        return Role.ADMIN
    membership = user_membership(user)
    return membership.role if membership else None


def user_agency_id(user) -> int | None:
    """The id of the user's agency, or None."""
    membership = user_membership(user)
    return membership.agency_id if membership else None


def user_agency_ids(user) -> set[int]:
    """The agencies whose private objects the user may read (oversight: not listed)."""
    agency_id = user_agency_id(user)
    return {agency_id} if agency_id is not None else set()


def is_platform_admin(user) -> bool:
    """Platform administrators manage every agency."""
    return user_role(user) == Role.ADMIN


def is_oversight(user) -> bool:
    """Reviewers and platform administrators read across every agency."""
    return user_role(user) in (Role.REVIEWER, Role.ADMIN)


def forget_membership(user) -> None:
    """Drop the cached membership after a role change."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)
