"""``manage.py verify_audit``: recompute the audit chain; non-zero exit if broken."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit import services as audit
from audit.verify import parse_json


class Command(BaseCommand):
    help = (
        "Recompute the audit chain from the database, check every signed "
        "checkpoint (and any kept outside it), print the report as JSON; exit "
        "status 1 if the chain or a checkpoint fails."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            type=Path,
            help="a checkpoint envelope kept outside the database; repeatable",
        )
        parser.add_argument(
            "--key",
            type=Path,
            help="check checkpoints with this public key (PEM) instead of the "
            "platform's own",
        )
        parser.add_argument(
            "--workers",
            type=int,
            help="processes reading the chain (default: one per core for 20,000 "
            "events or more)",
        )

    def handle(self, *args, checkpoint: list[Path], key: Path | None, **options):
        try:
            extra = [parse_json(path.read_bytes()) for path in checkpoint]
            public_key = key.read_bytes() if key else None
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read a checkpoint or key file: {exc}") from exc
        report = audit.verify_chain(
            public_key=public_key, extra_checkpoints=extra, workers=options["workers"]
        )
        self.stdout.write(json.dumps(report.summary()))
        if not report.ok:
            raise CommandError(
                f"audit chain verification failed: {report.reason}", returncode=1
            )
