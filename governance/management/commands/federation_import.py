"""`manage.py federation_import FILE [--peer NAME]`: verify and import a bundle.

``--trust NAME --public-key FILE --base-url URL --jurisdiction XX`` first
registers the peer (once). A refused bundle exits with status 2 and prints
``refused: <reason>: <message>`` on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from governance.federation.services import FederationRefused, bundle_import, peer_create
from governance.models import FederationPeer


class Command(BaseCommand):
    help = "Verify a peer's signed federation bundle and import it."

    def add_arguments(self, parser):
        parser.add_argument("bundle", help="the bundle file (tar.gz)")
        parser.add_argument("--peer", default=None, help="the trusted peer's name")
        parser.add_argument("--trust", default=None, help="register this peer first")
        parser.add_argument(
            "--public-key", default=None, help="its public key PEM file"
        )
        parser.add_argument("--base-url", default="https://peer.invalid/")
        parser.add_argument("--jurisdiction", default="EU")

    def _peer(self, options) -> FederationPeer | None:
        name = options["trust"]
        if name and not FederationPeer.objects.filter(name=name).exists():
            if not options["public_key"]:
                raise CommandError("--trust needs --public-key")
            peer_create(
                actor=None,
                name=name,
                base_url=options["base_url"],
                public_key_pem=Path(options["public_key"]).read_text(),
                jurisdiction=options["jurisdiction"],
            )
        name = options["peer"] or name
        if not name:
            return None
        peer = FederationPeer.objects.filter(name=name).first()
        if peer is None:
            raise CommandError(f"no trusted peer named {name!r}")
        return peer

    def handle(self, *args, bundle: str, **options):
        peer = self._peer(options)
        try:
            record = bundle_import(actor=None, archive=Path(bundle), peer=peer)
        except FederationRefused as exc:
            raise CommandError(
                f"refused: {exc.code}: {exc.message}", returncode=2
            ) from exc
        self.stdout.write(json.dumps({"id": record.pk, **record.summary}, indent=2))
