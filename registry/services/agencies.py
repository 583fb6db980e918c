"""Governed writes of agencies, their people and personal API tokens.

Platform administrators create agencies and act on every agency; an agency's
maintainers update the agency and manage its people up to the maintainer role.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from knox.models import AuthToken
from knox.settings import knox_settings

from audit import services as audit
from config.exceptions import Conflict, DomainError
from registry.models import (
    Agency,
    Membership,
    Role,
    forget_membership,
    is_platform_admin,
    user_agency_id,
    user_membership,
    user_role,
)
from registry.services.changes import (
    UNSET,
    _apply,
    _clean,
    _denied,
    _duplicate,
    _field_error,
    _jsonable,
    _require_maintainer,
    _save_unique,
)

# Roles an agency maintainer may grant, change or remove; the others are
# platform-wide powers that only a platform administrator hands out.
AGENCY_ROLES = frozenset({Role.MEMBER, Role.MAINTAINER})

# --- agencies and people -------------------------------------------------------


@transaction.atomic
def agency_create(
    *,
    actor,
    name: str,
    slug: str,
    jurisdiction: str,
    contact_name: str = "",
    contact_email: str = "",
    description: str = "",
    is_oversight_body: bool = False,
) -> Agency:
    """Register a public body as a tenant.

    Platform administrators only (``PolicyViolation`` otherwise). A name or
    slug already taken raises ``Conflict`` naming the field.
    """
    if not is_platform_admin(actor):
        raise _denied("Only platform administrators register agencies.")
    agency = Agency(
        name=name,
        slug=slug,
        jurisdiction=jurisdiction,
        contact_name=contact_name,
        contact_email=contact_email,
        description=description,
        is_oversight_body=is_oversight_body,
    )
    _clean(agency)
    for field in ("name", "slug"):
        if Agency.objects.filter(**{field: getattr(agency, field)}).exists():
            raise _duplicate(field, f"An agency with this {field} exists.")
    _save_unique(agency, field="slug", message="An agency with this slug exists.")
    audit.record(
        actor=actor,
        action="agency.created",
        obj=agency,
        agency=agency,
        payload={
            "slug": agency.slug,
            "name": agency.name,
            "jurisdiction": agency.jurisdiction,
            "is_oversight_body": agency.is_oversight_body,
        },
    )
    return agency


@transaction.atomic
def agency_update(
    *,
    actor,
    agency: Agency,
    name: str = UNSET,
    jurisdiction: str = UNSET,
    contact_name: str = UNSET,
    contact_email: str = UNSET,
    description: str = UNSET,
) -> Agency:
    """Change an agency's descriptive fields; the slug never changes.

    The agency's maintainers or a platform administrator. Whether an agency
    is an oversight body is set at creation only.
    """
    _require_maintainer(actor, agency.pk)
    changed = _apply(
        agency,
        {
            "name": name,
            "jurisdiction": jurisdiction,
            "contact_name": contact_name,
            "contact_email": contact_email,
            "description": description,
        },
    )
    if not changed:
        return agency
    _clean(agency)
    if (
        "name" in changed
        and Agency.objects.filter(name=agency.name).exclude(pk=agency.pk).exists()
    ):
        raise _duplicate("name", "An agency with this name exists.")
    _save_unique(
        agency,
        field="name",
        message="An agency with this name exists.",
        update_fields=list(changed),
    )
    audit.record(
        actor=actor,
        action="agency.updated",
        obj=agency,
        agency=agency,
        payload={"changed": changed},
    )
    return agency


def _check_grant(actor, agency: Agency, *roles: str) -> None:
    """Whether ``actor`` may give or take away each of ``roles`` in ``agency``."""
    if is_platform_admin(actor):
        return
    if user_agency_id(actor) != agency.pk or user_role(actor) != Role.MAINTAINER:
        raise _denied(
            "Only the agency's maintainers or a platform administrator manage "
            "its people."
        )
    for role in roles:
        if role not in AGENCY_ROLES:
            raise _denied(
                f"Only platform administrators grant, change or remove the {role} role."
            )


def _check_role_fits(agency: Agency, role: str) -> None:
    """Reviewers belong to oversight bodies: the role reads across every agency."""
    if role == Role.REVIEWER and not agency.is_oversight_body:
        message = "The reviewer role exists only in oversight bodies."
        raise DomainError(
            message, code="invalid_role", fields=_field_error("role", message)
        )


@transaction.atomic
def membership_add(
    *, actor, agency: Agency, user, role: str = Role.MEMBER
) -> Membership:
    """Give a person a place and a role in an agency.

    A person belongs to one agency at most (``Conflict`` otherwise).
    Maintainers add members and maintainers to their own agency; only
    platform administrators grant reviewer or admin. Raises
    ``PolicyViolation`` when the actor may not grant the role.
    """
    if role not in Role.values:
        raise DomainError(
            "Unknown role.", fields=_field_error("role", f"Unknown role {role!r}.")
        )
    _check_grant(actor, agency, role)
    _check_role_fits(agency, role)
    if Membership.objects.filter(user=user).exists():
        message = "This person already belongs to an agency."
        raise Conflict(
            message, code="already_member", fields=_field_error("user", message)
        )
    membership = Membership(user=user, agency=agency, role=role)
    _save_unique(
        membership, field="user", message="This person already belongs to an agency."
    )
    forget_membership(user)
    audit.record(
        actor=actor,
        action="membership.added",
        obj=membership,
        agency=agency,
        payload={"user": user.get_username(), "role": role},
    )
    return membership


@transaction.atomic
def membership_set_role(*, actor, membership: Membership, role: str) -> Membership:
    """Change a person's role, audited as ``membership.role_changed``.

    Nobody changes their own role. Maintainers move their agency's people
    between member and maintainer; any change touching reviewer or admin is a
    platform administrator's. Raises ``PolicyViolation``.
    """
    if role not in Role.values:
        raise DomainError(
            "Unknown role.", fields=_field_error("role", f"Unknown role {role!r}.")
        )
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("agency", "user")
        .get(pk=membership.pk)
    )
    if membership.user_id == actor.pk:
        raise _denied("Nobody changes their own role.")
    _check_grant(actor, membership.agency, membership.role, role)
    _check_role_fits(membership.agency, role)
    previous = membership.role
    if previous == role:
        return membership
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    forget_membership(membership.user)
    audit.record(
        actor=actor,
        action="membership.role_changed",
        obj=membership,
        agency=membership.agency,
        payload={
            "user": membership.user.get_username(),
            "from": previous,
            "to": role,
        },
    )
    return membership


@transaction.atomic
def membership_remove(*, actor, membership: Membership) -> None:
    """Take a person out of an agency.

    The same rules as a role change: nobody removes themselves, maintainers
    remove members and maintainers, platform administrators anyone.
    """
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("agency", "user")
        .get(pk=membership.pk)
    )
    if membership.user_id == actor.pk:
        raise _denied("Nobody removes their own membership; ask another maintainer.")
    _check_grant(actor, membership.agency, membership.role)
    payload = {"user": membership.user.get_username(), "role": membership.role}
    membership_id, agency, user = membership.pk, membership.agency, membership.user
    membership.delete()
    forget_membership(user)
    audit.record(
        actor=actor,
        action="membership.removed",
        object_type="registry.membership",
        object_id=str(membership_id),
        agency=agency,
        payload=payload,
    )


# --- API tokens ----------------------------------------------------------------


@transaction.atomic
def token_create(*, actor) -> tuple[AuthToken, str]:
    """Issue a personal API token; the secret is returned here and never again.

    Only the digest is stored (knox). Expiry follows ``REST_KNOX["TOKEN_TTL"]``.
    More live tokens than ``TOKEN_LIMIT_PER_USER`` raises ``Conflict``.
    """
    limit = knox_settings.TOKEN_LIMIT_PER_USER
    if limit is not None:
        live = AuthToken.objects.filter(user=actor, expiry__gt=timezone.now()).count()
        if live >= limit:
            raise Conflict(
                f"You hold {live} live tokens, the most allowed; revoke one first.",
                code="token_limit_reached",
            )
    instance, secret = AuthToken.objects.create(user=actor)
    audit.record(
        actor=actor,
        action="token.created",
        object_type="knox.authtoken",
        object_id=instance.token_key,
        agency=_actor_agency(actor),
        payload={"token_key": instance.token_key, "expiry": _jsonable(instance.expiry)},
    )
    return instance, secret


@transaction.atomic
def token_revoke(*, actor, token_key: str) -> bool:
    """Revoke the actor's token with this key; a revoked token then answers 401.

    Only the actor's own tokens are reachable. Returns False, recording
    nothing, when the actor holds no token with this key.
    """
    deleted, _ = AuthToken.objects.filter(user=actor, token_key=token_key).delete()
    if not deleted:
        return False
    audit.record(
        actor=actor,
        action="token.revoked",
        object_type="knox.authtoken",
        object_id=token_key,
        agency=_actor_agency(actor),
        payload={"token_key": token_key},
    )
    return True


def _actor_agency(actor) -> Agency | None:
    membership = user_membership(actor)
    return membership.agency if membership else None
