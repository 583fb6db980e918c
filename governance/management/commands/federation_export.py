"""`manage.py federation_export <version> --output FILE`: a signed federation bundle."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from config.exceptions import DomainError
from governance.federation.services import bundle_export
from governance.management.commands.evaluate import _version


class Command(BaseCommand):
    help = (
        "Write a model version's signed federation bundle (tar.gz) to a file; "
        "recorded in the audit chain."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", help="model version id or agency/model@1.0.0")
        parser.add_argument("--output", required=True, help="the bundle file to write")
        parser.add_argument(
            "--include-artifacts", action="store_true", help="add the artifact file"
        )
        parser.add_argument(
            "--since",
            type=int,
            default=None,
            help="the tree size the importer last saw: adds a consistency proof",
        )

    def handle(self, *args, version: str, **options):
        found = _version(version)
        with open(options["output"], "wb") as out:
            try:
                manifest = bundle_export(
                    actor=None,
                    version=found,
                    out=out,
                    include_artifacts=options["include_artifacts"],
                    since_tree_size=options["since"],
                )
            except DomainError as exc:
                raise CommandError(f"{exc.code}: {exc.message}") from exc
        summary = {"tree_size": manifest["tree_size"], "members": manifest["members"]}
        self.stdout.write(json.dumps(summary, indent=2))
