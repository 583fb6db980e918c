"""Governed writes of identity: claim rules, single sign-on, sign-out everywhere.

- Platform administrators write the claim rules (``ClaimRule``) that decide
  which agency and role a person signing in through OpenID Connect gets.
- ``account_sso_sign_in`` creates or updates the account and its membership
  from the claims at every sign-in, so a role taken away at the identity
  provider is taken away here at the person's next sign-in. Its membership
  changes are the ``membership.*`` events the membership services record,
  with ``via: "sso"`` and the rule that decided; the sign-in itself is
  ``account.sso_signed_in``, a refusal ``account.sso_refused``.
- ``account_sign_out_everywhere`` ends every browser session of a person
  (``SessionGeneration``), and optionally revokes their API tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from knox.models import AuthToken

from audit import services as audit
from config.exceptions import DomainError
from registry.models import (
    Agency,
    ClaimRule,
    ExternalIdentity,
    Membership,
    Role,
    SessionGeneration,
    forget_membership,
    is_platform_admin,
    user_membership,
)
from registry.selectors import claim_names, claim_rule_for
from registry.services.agencies import _check_role_fits
from registry.services.changes import UNSET, _apply, _clean, _denied

# The profile claims copied onto the account at every sign-in.
PROFILE_CLAIMS = {
    "email": "email",
    "given_name": "first_name",
    "family_name": "last_name",
}


# --- claim rules ---------------------------------------------------------------


def _require_platform_admin(actor) -> None:
    if not is_platform_admin(actor):
        raise _denied("Only platform administrators write single sign-on rules.")


def _rule_payload(rule: ClaimRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "claim": rule.claim,
        "value": rule.value,
        "agency": rule.agency.slug,
        "role": rule.role,
        "priority": rule.priority,
        "is_active": rule.is_active,
    }


@transaction.atomic
def claim_rule_create(
    *,
    actor,
    name: str,
    claim: str,
    value: str,
    agency: Agency,
    role: str = Role.MEMBER,
    priority: int = 0,
    is_active: bool = True,
) -> ClaimRule:
    """Add a rule mapping a claim value to an agency and role (``sso.rule_created``).

    Platform administrators only (``PolicyViolation``); a reviewer rule must
    name an oversight body (``DomainError``).
    """
    _require_platform_admin(actor)
    rule = ClaimRule(
        name=name,
        claim=claim,
        value=value,
        agency=agency,
        role=role,
        priority=priority,
        is_active=is_active,
    )
    _clean(rule)
    _check_role_fits(agency, role)
    rule.save()
    audit.record(
        actor=actor,
        action="sso.rule_created",
        obj=rule,
        agency=agency,
        payload=_rule_payload(rule),
    )
    return rule


@transaction.atomic
def claim_rule_update(
    *,
    actor,
    rule: ClaimRule,
    name: str = UNSET,
    claim: str = UNSET,
    value: str = UNSET,
    agency: Agency = UNSET,
    role: str = UNSET,
    priority: int = UNSET,
    is_active: bool = UNSET,
) -> ClaimRule:
    """Change a rule (``sso.rule_changed``); it applies from the next sign-in."""
    _require_platform_admin(actor)
    rule = ClaimRule.objects.select_for_update().get(pk=rule.pk)
    changed = _apply(
        rule,
        {
            "name": name,
            "claim": claim,
            "value": value,
            "agency": agency,
            "role": role,
            "priority": priority,
            "is_active": is_active,
        },
    )
    if not changed:
        return rule
    _clean(rule)
    _check_role_fits(rule.agency, rule.role)
    rule.save()
    audit.record(
        actor=actor,
        action="sso.rule_changed",
        obj=rule,
        agency=rule.agency,
        payload={"changed": changed, "rule": _rule_payload(rule)},
    )
    return rule


# --- single sign-on ------------------------------------------------------------


def _no_rule() -> DomainError:
    return DomainError(
        _(
            "no rule of this platform gives your account a place in an agency. "
            "Ask a platform administrator to add one for your organisation."
        ),
        code="no_matching_rule",
    )


def _username_base(claims: dict) -> str:
    """A readable username from the claims (preferred username, else address)."""
    wanted = str(claims.get("preferred_username") or "")
    if not wanted:
        wanted = str(claims.get("email") or "").partition("@")[0]
    return re.sub(r"[^\w.@+-]", "", wanted)[:140] or "sso-user"


def _create_account(claims: dict, profile: dict):
    """A new staff account with no usable password, under a free username.

    A taken username (a local account, or another provider's person) gets a
    number: ``ada``, ``ada-2``, ``ada-3``...
    """
    users = get_user_model().objects
    base = _username_base(claims)
    for number in range(1, 1000):
        username = base if number == 1 else f"{base}-{number}"
        if users.filter(username__iexact=username).exists():
            continue
        try:
            with transaction.atomic():
                return users.create_user(
                    username=username, password=None, is_staff=True, **profile
                )
        except IntegrityError:
            continue
    raise DomainError("No free username for this person.", code="username_taken")


def _provision(user, *, issuer: str, claims: dict):
    """The account of ``claims``: created and linked to the provider's subject,
    or its profile fields brought up to date."""
    profile = {
        field: str(claims.get(claim) or "")[:150]
        for claim, field in PROFILE_CLAIMS.items()
    }
    subject = str(claims["sub"])
    if user is None:
        user = _create_account(claims, profile)
        ExternalIdentity.objects.create(
            user=user, issuer=issuer, subject=subject, last_sign_in_at=timezone.now()
        )
        return user
    user = get_user_model().objects.select_for_update().get(pk=user.pk)
    ExternalIdentity.objects.filter(user=user, issuer=issuer, subject=subject).update(
        last_sign_in_at=timezone.now()
    )
    changed = [name for name, value in profile.items() if getattr(user, name) != value]
    for name in changed:
        setattr(user, name, profile[name])
    if changed:
        user.save(update_fields=changed)
    return user


def _apply_rule(user, rule: ClaimRule) -> None:
    """Give ``user`` the rule's agency and role, recording what changed."""
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("agency")
        .filter(user=user)
        .first()
    )
    via = {"user": user.get_username(), "via": "sso", "rule": rule.pk}
    if membership is None:
        membership = Membership.objects.create(
            user=user, agency=rule.agency, role=rule.role
        )
        audit.record(
            actor=None,
            action="membership.added",
            obj=membership,
            agency=rule.agency,
            payload={**via, "role": rule.role},
        )
    elif (membership.agency_id, membership.role) != (rule.agency_id, rule.role):
        before = {"agency": membership.agency.slug, "role": membership.role}
        membership.agency, membership.role = rule.agency, rule.role
        membership.save(update_fields=["agency", "role", "updated_at"])
        audit.record(
            actor=None,
            action="membership.role_changed",
            obj=membership,
            agency=rule.agency,
            payload={
                **via,
                "from": before["role"],
                "to": rule.role,
                "agency_from": before["agency"],
                "agency_to": rule.agency.slug,
            },
        )
    forget_membership(user)


@transaction.atomic
def account_sso_sign_in(*, user, issuer: str, claims: dict, provider: str):
    """The account a person signing in through OIDC becomes, per the claim rules.

    ``user`` is the account already linked to the provider's subject
    (``ExternalIdentity``), or None for a first sign-in: the account is then
    created, staff, with no usable password, and linked. The winning rule's
    agency and role replace the membership's when they differ (audited as a
    membership change by the platform). Raises ``DomainError``
    (``no_matching_rule``) when no active rule matches, or
    (``account_inactive``) for a deactivated account; nothing is written.
    """
    if user is not None and not user.is_active:
        raise DomainError(
            _("this account is deactivated on this platform."),
            code="account_inactive",
        )
    rule = claim_rule_for(claims)
    if rule is None:
        raise _no_rule()
    user = _provision(user, issuer=issuer, claims=claims)
    _apply_rule(user, rule)
    audit.record(
        actor=None,
        action="account.sso_signed_in",
        obj=user,
        agency=rule.agency,
        payload={
            "user": user.get_username(),
            "issuer": issuer,
            "subject": str(claims.get("sub", "")),
            "provider": provider,
            "rule": rule.pk,
            "agency": rule.agency.slug,
            "role": rule.role,
        },
    )
    return user


@transaction.atomic
def account_sso_refuse(*, issuer: str, claims: dict, code: str, reason: str) -> None:
    """Record a refused single sign-on (``account.sso_refused``).

    The payload keeps the subject and the values of the claims the rules
    read, so an administrator sees why no rule matched; no other claim.
    """
    read = {name: claims[name] for name in sorted(claim_names()) if name in claims}
    subject = str(claims.get("sub", ""))
    audit.record(
        actor=None,
        action="account.sso_refused",
        object_type="registry.externalidentity",
        object_id=subject[:100],
        payload={
            "issuer": issuer,
            "subject": subject,
            "claims": read,
            "code": code,
            "reason": reason,
        },
    )


# --- sign out everywhere -------------------------------------------------------


@dataclass(frozen=True)
class SignOut:
    """What ``account_sign_out_everywhere`` ended."""

    generation: int
    tokens_revoked: int


@transaction.atomic
def account_sign_out_everywhere(*, actor, revoke_tokens: bool = False) -> SignOut:
    """End every browser session of ``actor``, on every device.

    Moves the person's session generation on: every session opened before
    (this one included) is ended at its next request by
    ``registry.sessions.SessionGenerationMiddleware``. With
    ``revoke_tokens``, the person's API tokens are deleted too. Records
    ``account.signed_out_everywhere``.
    """
    row, _created = SessionGeneration.objects.select_for_update().get_or_create(
        user=actor
    )
    row.generation += 1
    row.ended_at = timezone.now()
    row.save(update_fields=["generation", "ended_at"])
    revoked = 0
    if revoke_tokens:
        revoked, _rows = AuthToken.objects.filter(user=actor).delete()
    membership = user_membership(actor)
    audit.record(
        actor=actor,
        action="account.signed_out_everywhere",
        obj=actor,
        agency=membership.agency if membership else None,
        payload={
            "user": actor.get_username(),
            "generation": row.generation,
            "tokens_revoked": revoked,
        },
    )
    return SignOut(generation=row.generation, tokens_revoked=revoked)
