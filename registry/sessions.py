"""Sign out everywhere: a session opened before the person's last sign-out ends.

Every browser session keeps the generation of its person's sessions at the
moment it signed in (``remember_generation``, on Django's ``user_logged_in``
signal). ``account_sign_out_everywhere`` moves the person's generation on;
at its next request, a session holding an older generation is ended by
``SessionGenerationMiddleware``. One indexed read per signed-in request, no
scan of the session table, and it works with any session engine.
"""

from __future__ import annotations

from django.contrib import auth
from django.contrib.auth.signals import user_logged_in

from registry.models import SessionGeneration

SESSION_KEY = "civitas_session_generation"


def current_generation(user_id) -> int:
    """The person's session generation (0 until they first sign out everywhere)."""
    generation = (
        SessionGeneration.objects.filter(user_id=user_id)
        .values_list("generation", flat=True)
        .first()
    )
    return generation or 0


def remember_generation(sender, request, user, **kwargs) -> None:
    """``user_logged_in``: the new session belongs to the current generation."""
    if request is not None and hasattr(request, "session"):
        request.session[SESSION_KEY] = current_generation(user.pk)


class SessionGenerationMiddleware:
    """End a session whose generation is older than its person's (after auth)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        session = getattr(request, "session", None)
        user_id = session.get(auth.SESSION_KEY) if session is not None else None
        # A session from before this mechanism existed counts as generation 0.
        if user_id is not None and session.get(SESSION_KEY, 0) < current_generation(
            user_id
        ):
            auth.logout(request)
        return self.get_response(request)


def connect_session_generation() -> None:
    """Connect ``remember_generation`` (from ``AppConfig.ready``)."""
    user_logged_in.connect(
        remember_generation, dispatch_uid="civitas.remember_session_generation"
    )
