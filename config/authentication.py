"""How callers prove who they are, and how password guessing is bounded.

- Every API route authenticates with a personal token (knox) or a browser
  session. An HTTP Basic header is refused with 401 before any password is
  looked at: a password is accepted only where a token is created
  (``POST /api/v1/auth/tokens/``, which adds Basic for itself), and at the
  admin login.
- Every password check (HTTP Basic on the token route, the admin login form)
  goes through ``PasswordAttemptBackend``, which first takes one attempt from
  the caller's account and from the caller's address, then checks the password.
  An account or an address with no attempt left answers 429 with
  ``Retry-After`` and the code ``account_locked`` or ``address_locked``, the
  same answer whether the password sent was right or wrong: the password is
  not checked at all while locked. Attempts live in the shared cache
  (``CACHE_URL``), so every web process counts against the same budget.

An attempt is one of N slots taken with ``cache.add`` (atomic on Redis, SET NX,
and on the database cache, a primary key): concurrent guesses cannot share a
slot, so no more than N passwords per account (and per address) are checked in
any window of ``PASSWORD_LOCKOUT_SECONDS``. A successful sign-in gives
its slots back. Usernames are counted whether or not the account exists, so
the lockout reveals nothing about which accounts exist.
"""

from __future__ import annotations

import binascii
import contextvars
import hashlib
import ipaddress
import math
import time
from dataclasses import dataclass
from hmac import compare_digest

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.settings import CONSTANTS, knox_settings
from knox.signals import token_expired
from rest_framework import exceptions, status
from rest_framework.authentication import get_authorization_header
from rest_framework.throttling import BaseThrottle

# Where ``registry.models.user_membership`` keeps a user's membership for the
# request; the token check fills it from the row it joined.
MEMBERSHIP_CACHE_ATTR = "_civitas_membership"

BASIC_REFUSED = (
    "HTTP Basic is accepted only by POST /api/v1/auth/tokens/, to create a "
    "token; send 'Authorization: Token <token>' here."
)


def invalid_token() -> exceptions.AuthenticationFailed:
    """knox's refusal of an unknown, revoked or expired token (401)."""
    return exceptions.AuthenticationFailed(_("Invalid token."))


class TokenAuthentication(KnoxTokenAuthentication):
    """A knox token; an HTTP Basic header is refused, its password never checked.

    One query per request: the token row comes with its user and the user's
    membership and agency (``user__membership__agency``, read by
    ``registry.models.user_membership``), and knox's per-request sweep of the
    user's other tokens is left out: an expired token is refused on its own
    expiry, every list counts live tokens only, and beat deletes expired rows
    (``civitas.token_purge``).
    """

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if header and header[0].lower() == b"basic":
            raise exceptions.AuthenticationFailed(BASIC_REFUSED, code="basic_refused")
        return super().authenticate(request)

    def authenticate_credentials(self, token):
        """knox's check of the token's digest, on the one joined row."""
        msg = _("Invalid token.")
        token = token.decode("utf-8")
        candidates = (
            get_token_model()
            .objects.filter(token_key=token[: CONSTANTS.TOKEN_KEY_LENGTH])
            .select_related("user__membership__agency")
        )
        for auth_token in candidates:
            if self._cleanup_token(auth_token):
                continue
            try:
                digest = hash_token(token)
            except (TypeError, binascii.Error):
                raise exceptions.AuthenticationFailed(msg) from None
            if compare_digest(digest, auth_token.digest):
                if knox_settings.AUTO_REFRESH and auth_token.expiry:
                    self.renew_token(auth_token)
                user = auth_token.user
                # A fresh user object per request: its joined membership (or
                # None) is the current one.
                setattr(
                    user,
                    MEMBERSHIP_CACHE_ATTR,
                    user._state.fields_cache.get("membership"),
                )
                return self.validate_user(auth_token)
        raise exceptions.AuthenticationFailed(msg)

    def _cleanup_token(self, auth_token) -> bool:
        """True (and the row deleted) when this token has expired."""
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            username = auth_token.user.get_username()
            auth_token.delete()
            token_expired.send(
                sender=self.__class__, username=username, source="auth_token"
            )
            return True
        return False


def expired_tokens_purge() -> int:
    """Delete every expired API token row; the number deleted (beat, hourly)."""
    deleted, _ = get_token_model().objects.filter(expiry__lt=timezone.now()).delete()
    return deleted


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme of ``TokenAuthentication`` (knox's own)."""

    target_class = "config.authentication.TokenAuthentication"
    match_subclasses = True  # registry.read_cache.GenerationTokenAuthentication


class PasswordLocked(exceptions.APIException):
    """No password attempt left for this account or address (429, Retry-After)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "account_locked"

    def __init__(self, *, scope: str, wait: int) -> None:
        whose = "this account" if scope == "account" else "this address"
        message = (
            f"Too many password attempts for {whose}; sign-in is locked for a "
            "while (see Retry-After). The password was not checked."
        )
        super().__init__(message, code=f"{scope}_locked")
        self.wait = wait


@dataclass
class _Attempt:
    slots: list[str]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


def client_address(request) -> str:
    """The caller's address as the API throttles see it (``NUM_PROXIES`` aware).

    IPv6 addresses count by their /64, the block one host is usually given.
    """
    ident = BaseThrottle().get_ident(request) or ""
    try:
        address = ipaddress.ip_address(ident)
    except ValueError:
        return ident
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _take_slot(key: str, limit: int, window: int) -> tuple[str | None, int]:
    """One of ``limit`` slots under ``key``: (slot, 0), or (None, seconds to wait)."""
    names = [f"{key}:{index}" for index in range(limit)]
    taken = cache.get_many(names)
    now = time.time()
    for name in names:
        if name not in taken and cache.add(name, now + window, timeout=window):
            return name, 0
    frees_at = min(cache.get_many(names).values(), default=now + 1)
    return None, max(1, math.ceil(frees_at - now))


def take_attempt(request, username: str) -> _Attempt:
    """Take an attempt from the address, then the account; raise if none is left."""
    window = settings.PASSWORD_LOCKOUT_SECONDS
    budgets = [
        ("address", client_address(request), settings.PASSWORD_ATTEMPTS_PER_ADDRESS),
        ("account", username.casefold(), settings.PASSWORD_ATTEMPTS_PER_ACCOUNT),
    ]
    attempt = _Attempt(slots=[])
    for scope, ident, limit in budgets:
        key = f"password-attempt:{scope}:{_digest(ident)}"
        slot, wait = _take_slot(key, limit, window)
        if slot is None:
            # A refused attempt checks no password, so it costs nothing.
            give_back(attempt)
            raise PasswordLocked(scope=scope, wait=wait)
        attempt.slots.append(slot)
    return attempt


def give_back(attempt: _Attempt) -> None:
    """Return an attempt's slots (a successful sign-in is not a guess)."""
    if attempt.slots:
        cache.delete_many(attempt.slots)


class PasswordAttemptBackend(ModelBackend):
    """Django's model backend, after an attempt is taken from account and address.

    Called with a request by DRF's HTTP Basic and by the admin login form;
    calls without a request (scripts, tests) are not counted.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if request is None or username is None or password is None:
            return super().authenticate(request, username, password, **kwargs)
        attempt = take_attempt(request, str(username))
        user = super().authenticate(request, username, password, **kwargs)
        if user is not None:
            give_back(attempt)
        return user


_served_request: contextvars.ContextVar = contextvars.ContextVar(
    "civitas_served_request", default=None
)


def served_user():
    """The user of the request being served (as DRF authenticated it), or None.

    For output that depends on who reads it when no request was passed down
    (a serializer built without context); outside a request there is no reader.
    """
    request = _served_request.get()
    return getattr(request, "user", None) if request is not None else None


class ServedRequestMiddleware:
    """Remember the request being served (``served_user``), and answer a locked
    admin sign-in with 429 and Retry-After (the API's own exception handler
    answers for routes under /api/)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _served_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _served_request.reset(token)

    def process_exception(self, request, exception):
        if not isinstance(exception, PasswordLocked):
            return None
        minutes = max(1, math.ceil(exception.wait / 60))
        body = (
            "<!doctype html><title>Sign-in locked</title>"
            f"<h1>Sign-in locked</h1><p>{escape(exception.detail)}</p>"
            f"<p>Try again in about {minutes} minute(s).</p>"
        )
        response = HttpResponse(body, status=429, content_type="text/html")
        response["Retry-After"] = str(exception.wait)
        return response


class SignInView(auth_views.LoginView):
    """The portal's sign-in page: a password, or the single sign-on button.

    A locked account or address (``PasswordLocked``) answers 429 with
    ``Retry-After`` on the same page, saying in the reader's language how
    long to wait. The single sign-on button shows when ``OIDC_RP_CLIENT_ID``
    is set (its routes are the registry's, mounted under /accounts/oidc/).
    """

    template_name = "portal/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        if settings.OIDC_RP_CLIENT_ID:
            query = urlencode({"next": context.get("next") or ""})
            context["sso_name"] = settings.OIDC_PROVIDER_NAME
            context["sso_url"] = f"{reverse('oidc_authentication_init')}?{query}"
        return context

    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except PasswordLocked as locked:
            minutes = max(1, math.ceil(locked.wait / 60))
            whose = (
                _("this account")
                if locked.detail.code == "account_locked"
                else _("this address")
            )
            message = ngettext(
                "Too many sign-in attempts for %(whose)s: sign-in is locked. Try "
                "again in about %(minutes)d minute. Your password was not checked.",
                "Too many sign-in attempts for %(whose)s: sign-in is locked. Try "
                "again in about %(minutes)d minutes. Your password was not checked.",
                minutes,
            ) % {"whose": whose, "minutes": minutes}
            form = self.get_form_class()(request)
            context = self.get_context_data(form=form, locked_message=message)
            response = self.render_to_response(context, status=429)
            response["Retry-After"] = str(locked.wait)
            return response
