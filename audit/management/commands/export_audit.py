"""``manage.py export_audit > chain.jsonl``: the chain as JSON Lines for auditors."""

from __future__ import annotations

import getpass

from django.core.management.base import BaseCommand

from audit import services as audit


def _os_user() -> str:
    """Who ran the command, as the operating system knows them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


class Command(BaseCommand):
    help = (
        "Write the audit chain (header, signed checkpoints, events, end line) as "
        "JSON Lines to stdout, then record the export itself as an audit event. "
        "Verify it with: python -m audit.verify chain.jsonl --key public.pem"
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--model-version",
            type=int,
            help="export only the events of this model version (a partial export)",
        )

    def handle(self, *args, model_version: int | None, **options):
        export = audit.export_open(
            actor=None,
            object_type=audit.MODEL_VERSION_TYPE if model_version is not None else None,
            object_id=None if model_version is None else str(model_version),
            via=f"cli:{_os_user()}",
        )
        for line in export.lines():
            self.stdout.write(line, ending="")
