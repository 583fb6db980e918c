"""People's accounts: invitations, one-time set-password links, account audit.

An agency adds a person by invitation (``account_invite``): the account is
created with an unusable password and a membership with its role, and the
inviter hands the person a one-time link to set a password
(``password_link``), made by Django's password-reset machinery
(``PasswordResetTokenGenerator``; the link opens the auth views'
password-reset-confirm page, mounted at ``/accounts/reset/``). The link
works once: setting the password changes the hash the token is made from;
it also expires after ``PASSWORD_RESET_TIMEOUT`` seconds (Django's default,
three days).

Every account change is an audit event: invitations and links here; the
membership services record ``membership.added``, ``membership.role_changed``
and ``membership.removed``; password and flag changes made by Django's own
machinery are recorded by ``audit_account_change`` (see there).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from audit import services as audit
from config.exceptions import Conflict, PolicyViolation
from registry import services
from registry.models import (
    Agency,
    Membership,
    Role,
    is_platform_admin,
    user_agency_id,
    user_role,
)

# The account fields whose change is an audit event.
TRACKED_FIELDS = ("password", "is_staff", "is_superuser", "is_active")
_BEFORE = "_civitas_account_before"


@dataclass(frozen=True)
class Invitation:
    """An invited person, their membership and their one-time link."""

    user: object
    membership: Membership
    link: str


def _denied(message: str) -> PolicyViolation:
    return PolicyViolation(message, code="permission_denied")


def password_link_path(user) -> str:
    """The path of a one-time set-password link for ``user`` (Django's token)."""
    uidb64 = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return reverse(
        "password_reset_confirm", kwargs={"uidb64": uidb64, "token": token}
    )


def _require_inviter(actor, agency: Agency) -> None:
    """Platform administrators invite to any agency, maintainers to their own."""
    if is_platform_admin(actor):
        return
    if user_role(actor) != Role.MAINTAINER or user_agency_id(actor) != agency.pk:
        raise _denied(
            "Only the agency's maintainers or a platform administrator invite "
            "people to it."
        )


@transaction.atomic
def account_invite(
    *,
    actor,
    agency: Agency,
    username: str,
    email: str,
    role: str = Role.MEMBER,
    first_name: str = "",
    last_name: str = "",
    base_url: str = "",
) -> Invitation:
    """Create a person's account in ``agency`` with ``role``; return their link.

    The account has an unusable password until the person opens the link.
    It is staff, so that the person can use the admin, which shows them only
    what their agency and role allow. The role rules are
    ``membership_add``'s (maintainers grant member and maintainer in their
    own agency; platform administrators any role). Records
    ``account.invited`` and ``membership.added``. Raises ``PolicyViolation``
    when the actor may not invite, ``Conflict`` when the username or e-mail
    address is taken, ``DomainError`` for an unknown or misplaced role.
    """
    _require_inviter(actor, agency)
    users = get_user_model().objects
    if users.filter(username=username).exists():
        raise Conflict(f"The username {username!r} is taken.", code="username_taken")
    if email and users.filter(email__iexact=email).exists():
        raise Conflict("Another account has this e-mail address.", code="email_taken")
    user = users.create_user(
        username=username,
        email=email,
        password=None,
        first_name=first_name,
        last_name=last_name,
        is_staff=True,
    )
    membership = services.membership_add(
        actor=actor, agency=agency, user=user, role=role
    )
    audit.record(
        actor=actor,
        action="account.invited",
        obj=user,
        agency=agency,
        payload={"user": username, "role": role},
    )
    return Invitation(
        user=user,
        membership=membership,
        link=base_url.rstrip("/") + password_link_path(user),
    )


@transaction.atomic
def account_password_link(*, actor, user, base_url: str = "") -> str:
    """A new one-time set-password link for a person who has no password yet.

    For an invitation whose link was lost or expired, and for the demo's
    people. Only for accounts whose password is unusable: a person with a
    password changes it themselves, so no administrator can take over an
    account this way. The actor must be allowed to invite to the person's
    agency. Records ``account.password_link_issued``. Raises
    ``PolicyViolation``.
    """
    user = get_user_model().objects.select_for_update().get(pk=user.pk)
    if user.has_usable_password():
        raise _denied(
            "This person has set a password: they change it themselves, or a "
            "platform administrator sets one with manage.py changepassword."
        )
    membership = Membership.objects.select_related("agency").filter(user=user).first()
    if membership is None and not is_platform_admin(actor):
        raise _denied("Only a platform administrator reaches people with no agency.")
    if membership is not None:
        _require_inviter(actor, membership.agency)
    audit.record(
        actor=actor,
        action="account.password_link_issued",
        obj=user,
        agency=membership.agency if membership else None,
        payload={"user": user.get_username()},
    )
    return base_url.rstrip("/") + password_link_path(user)


# --- changes made by Django's own machinery ------------------------------------
#
# The admin's user form, the admin's password form, ``manage.py
# changepassword`` and the password-reset-confirm view save the user model
# themselves: no service of ours runs, so there is nothing to call
# ``audit.record`` from. These two receivers are the exception STYLE.md allows
# for: they add no domain rule, they only record that an account changed,
# whichever code path changed it. The acting user of a web request is known
# from ``ActingUserMiddleware``.

_acting_request = contextvars.ContextVar("civitas_acting_request", default=None)


class ActingUserMiddleware:
    """Remember the request being served, so account audit events name its user."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _acting_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _acting_request.reset(token)


def _actor_and_route(account) -> tuple[object | None, str]:
    """Who changed ``account`` and how: a signed-in user, the link, or a command."""
    request = _acting_request.get()
    if request is None:
        return None, "command"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user, "request"
    # An anonymous request that sets a password: the one-time link's owner.
    return account, "link"


def remember_account(sender, instance, update_fields=None, **kwargs) -> None:
    """``pre_save``: keep the stored values of the tracked fields to compare."""
    tracked = update_fields is None or set(update_fields) & set(TRACKED_FIELDS)
    before = None
    if instance.pk is not None and tracked:
        before = sender._default_manager.filter(pk=instance.pk).values(
            *TRACKED_FIELDS
        ).first()
    setattr(instance, _BEFORE, before)


def _password_set(instance, before: dict) -> bool:
    """A new password (or an unusable one), not a hash upgraded at login.

    Django re-hashes a password at login when the hasher changed, with the
    same raw password: ``set_password`` was not called (``_password`` is
    None) and the password stays usable, so that is no change.
    """
    if before["password"] == instance.password:
        return False
    return instance._password is not None or not instance.has_usable_password()


def audit_account_change(sender, instance, created=False, **kwargs) -> None:
    """``post_save``: record a password set or reset and changed account flags."""
    before = instance.__dict__.pop(_BEFORE, None)
    if created or before is None:
        return
    flags = {
        name: {"from": before[name], "to": getattr(instance, name)}
        for name in TRACKED_FIELDS[1:]
        if before[name] != getattr(instance, name)
    }
    password = _password_set(instance, before)
    if not (flags or password):
        return
    actor, route = _actor_and_route(instance)
    membership = Membership.objects.select_related("agency").filter(user=instance)
    agency = getattr(membership.first(), "agency", None)
    username = instance.get_username()
    with transaction.atomic():
        if password:
            audit.record(
                actor=actor,
                action="account.password_set",
                obj=instance,
                        agency=agency,
                payload={
                    "user": username,
                    "usable": instance.has_usable_password(),
                    "via": route,
                },
            )
        if flags:
            audit.record(
                actor=actor,
                action="account.flags_changed",
                obj=instance,
                        agency=agency,
                payload={"user": username, "changed": flags, "via": route},
            )


def connect_account_audit() -> None:
    """Connect the two receivers to the user model (from ``AppConfig.ready``)."""
    user_model = get_user_model()
    pre_save.connect(
        remember_account, sender=user_model, dispatch_uid="civitas.remember_account"
    )
    post_save.connect(
        audit_account_change,
        sender=user_model,
        dispatch_uid="civitas.audit_account_change",
    )
