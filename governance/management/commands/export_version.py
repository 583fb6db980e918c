"""`manage.py export_version <version> --format ...`: one export, to stdout or file."""

from __future__ import annotations

import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from config.exceptions import DomainError
from governance.exports.services import FORMATS, USE_CASE_FORMATS, export_create
from governance.management.commands.evaluate import _version
from governance.models import UseCase
from registry.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Export a model version (model card, ML-BOM, Annex IV HTML or PDF) or, "
        "with --use-case, its transparency record; recorded in the audit chain."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", help="model version id or agency/model@1.0.0")
        parser.add_argument("--format", required=True, choices=sorted(FORMATS))
        parser.add_argument(
            "--use-case",
            type=int,
            default=None,
            help="the use case (of this version) of a transparency record",
        )
        parser.add_argument(
            "--output", default=None, help="file to write (default: stdout)"
        )
        parser.add_argument(
            "--user",
            default=None,
            help="whose view to export (default: the first platform administrator)",
        )

    def handle(self, *args, version: str, **options):
        kind = options["format"]
        users = get_user_model().objects
        username = options["user"]
        actor = (
            users.filter(username=username).first()
            if username
            else users.filter(is_superuser=True).order_by("pk").first()
        )
        if actor is None:
            raise CommandError(f"no user '{username or 'superuser'}'")
        found = _version(version)
        if not ModelVersion.objects.visible_to(actor).filter(pk=found.pk).exists():
            raise CommandError(f"no model version '{version}' visible to {actor}")
        use_case = None
        if kind in USE_CASE_FORMATS:
            use_case = (
                UseCase.objects.visible_to(actor)
                .filter(pk=options["use_case"], model_version=found)
                .first()
                if options["use_case"]
                else None
            )
            if use_case is None:
                raise CommandError(
                    f"{kind} needs --use-case: a use case of this version "
                    f"visible to {actor}"
                )
        try:
            export = export_create(
                actor=actor, format=kind, version=found, use_case=use_case
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        if options["output"]:
            Path(options["output"]).write_bytes(export.content)
            self.stderr.write(
                f"{export.filename}: {len(export.content)} bytes, "
                f"sha256 {export.sha256} -> {options['output']}"
            )
        elif export.media_type == "application/pdf":
            sys.stdout.buffer.write(export.content)
            sys.stdout.flush()
        else:
            self.stdout.write(export.content.decode(), ending="")
