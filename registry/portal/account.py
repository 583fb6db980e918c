"""The reader's own account: who they are here, and "sign out everywhere".

``/portal/account/`` shows the signed-in person's agency, role, how they sign
in, their live API tokens and when they last ended all their sessions. The
form ends every browser session of the person on every device
(``registry.services.identity.account_sign_out_everywhere``), this one
included, and optionally revokes their API tokens.
"""

from __future__ import annotations

from django.contrib import auth, messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.generic import FormView
from knox.models import AuthToken

from registry.models import Role, SessionGeneration, user_membership, user_role
from registry.portal.forms import SignOutEverywhereForm
from registry.services import identity

# The roles' names in the reader's language.
ROLE_NAMES = {
    Role.MEMBER: gettext_lazy("Member"),
    Role.MAINTAINER: gettext_lazy("Maintainer"),
    Role.REVIEWER: gettext_lazy("Oversight reviewer"),
    Role.ADMIN: gettext_lazy("Platform administrator"),
}


class AccountView(LoginRequiredMixin, FormView):
    """The reader's account page and its "sign out everywhere" form."""

    template_name = "portal/account/account.html"
    form_class = SignOutEverywhereForm

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        user = self.request.user
        membership = user_membership(user)
        sessions = SessionGeneration.objects.filter(user=user).first()
        context.update(
            membership=membership,
            role=ROLE_NAMES.get(user_role(user)),
            uses_password=user.has_usable_password(),
            token_count=AuthToken.objects.filter(
                user=user, expiry__gt=timezone.now()
            ).count(),
            last_sign_out=sessions.ended_at if sessions else None,
        )
        return context

    def form_valid(self, form):
        result = identity.account_sign_out_everywhere(
            actor=self.request.user,
            revoke_tokens=form.cleaned_data["revoke_tokens"],
        )
        auth.logout(self.request)
        message = _("You are signed out on every device.")
        if form.cleaned_data["revoke_tokens"]:
            message += " " + ngettext(
                "%(count)d API token was revoked.",
                "%(count)d API tokens were revoked.",
                result.tokens_revoked,
            ) % {"count": result.tokens_revoked}
        messages.success(self.request, message)
        return redirect("login")
