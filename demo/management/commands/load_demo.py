"""Load the demo catalogue that ``make run`` shows a newcomer.

Idempotent: every object is looked up by a natural key before it is created,
so a second run adds nothing (``demo.loader``). The demo administrator's
password is generated on first run, kept in ``var/demo-admin-password`` (mode
0600, outside the repository) and printed on every run; no fixed password
exists anywhere. The other demo people are invited, not given passwords: each
has no password until they open a one-time link, which
``manage.py invite USERNAME --new-link --by admin`` prints (docs/accounts.md).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from demo import loader
from demo.catalogue import PEOPLE

DEMO_ADMIN = "admin"


def _demo_password(path: Path) -> tuple[str, bool]:
    """Read the stored demo password, or create one; return it and whether it is new."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(password + "\n", encoding="utf-8")
    return password, True


class Command(BaseCommand):
    help = "Create the demo administrator and the demo catalogue (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000/", help="portal URL to print"
        )

    def handle(self, *args, url: str, **options):
        started = time.perf_counter()
        password_file = Path(settings.VAR_DIR) / "demo-admin-password"
        password, is_new = _demo_password(password_file)
        user_model = get_user_model()
        user = user_model.objects.filter(username=DEMO_ADMIN).first()
        if user is None:
            user_model.objects.create_superuser(
                username=DEMO_ADMIN, email="admin@civitas.invalid", password=password
            )
        elif is_new:
            # The password file was removed: the old password is unknown, reset it.
            user.set_password(password)
            user.save(update_fields=["password"])
        report = loader.load_catalogue()
        seconds = time.perf_counter() - started
        if report.created:
            trained = (
                f", models trained in {report.trained_seconds:.1f} s"
                if report.trained_seconds is not None
                else ""
            )
            self.stdout.write(
                f"Demo catalogue: {len(report.created)} objects created"
                f"{trained} ({seconds:.1f} s)."
            )
        else:
            self.stdout.write(
                f"Demo catalogue: complete, nothing to add ({seconds:.1f} s)."
            )
        self.stdout.write(
            f"Civitas is starting at {url} (the public register)\n"
            f"  sign in: {url}accounts/login/   admin: {url}admin/   "
            f"API docs: {url}api/docs/\n"
            f"  demo login:   {DEMO_ADMIN} / {password}\n"
            f"  other demo people ({', '.join(p.username for p in PEOPLE)}) have no "
            f"password yet; a one-time link to set one:\n"
            f"    python manage.py invite USERNAME --new-link --by {DEMO_ADMIN}"
        )
