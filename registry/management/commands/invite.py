"""Invite a person to an agency with a role; print their one-time password link.

    manage.py invite USERNAME --agency SLUG --role ROLE --email ADDRESS --by ADMIN
    manage.py invite USERNAME --new-link --by ADMIN

The first form creates the account (no usable password), its membership and
the link; the second gives a new link to a person who has no password yet (an
invitation whose link was lost or expired, or one of the demo's people).
``--by`` names the platform administrator or agency maintainer on whose
authority the command acts: the audit chain records them, and the services
apply their rights. docs/accounts.md describes the whole procedure.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from config.exceptions import DomainError
from registry import accounts
from registry.models import Agency, Role


class Command(BaseCommand):
    help = "Invite a person to an agency with a role, or re-issue their link."

    def add_arguments(self, parser):
        parser.add_argument("username", help="the new person's username")
        parser.add_argument(
            "--by",
            required=True,
            help="username of the administrator or maintainer who invites",
        )
        parser.add_argument("--agency", help="slug of the agency to join")
        parser.add_argument(
            "--role", default=Role.MEMBER, choices=Role.values, help="their role"
        )
        parser.add_argument("--email", default="", help="their e-mail address")
        parser.add_argument("--first-name", default="")
        parser.add_argument("--last-name", default="")
        parser.add_argument(
            "--new-link",
            action="store_true",
            help="re-issue a link for an existing person with no password yet",
        )
        parser.add_argument(
            "--url",
            default="http://127.0.0.1:8000/",
            help="the platform's public URL, the start of the link",
        )

    def handle(self, *args, **options):
        users = get_user_model().objects
        actor = users.filter(username=options["by"]).first()
        if actor is None:
            raise CommandError(f"no user {options['by']!r} (--by)")
        try:
            if options["new_link"]:
                link = self._new_link(users, actor, options)
            else:
                link = self._invite(actor, options)
        except DomainError as error:
            raise CommandError(error.message) from error
        self.stdout.write(
            f"One-time link for {options['username']} to set a password "
            f"(valid until used, at most the password-reset timeout):\n  {link}"
        )

    def _invite(self, actor, options) -> str:
        if not options["agency"]:
            raise CommandError("--agency is required to invite a new person")
        agency = Agency.objects.filter(slug=options["agency"]).first()
        if agency is None:
            raise CommandError(f"no agency {options['agency']!r}")
        invitation = accounts.account_invite(
            actor=actor,
            agency=agency,
            username=options["username"],
            email=options["email"],
            role=options["role"],
            first_name=options["first_name"],
            last_name=options["last_name"],
            base_url=options["url"],
        )
        self.stdout.write(
            f"Invited {invitation.user.get_username()} to {agency.slug} "
            f"as {invitation.membership.role}."
        )
        return invitation.link

    def _new_link(self, users, actor, options) -> str:
        person = users.filter(username=options["username"]).first()
        if person is None:
            raise CommandError(f"no user {options['username']!r}")
        return accounts.account_password_link(
            actor=actor, user=person, base_url=options["url"]
        )
