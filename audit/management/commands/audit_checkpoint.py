"""``manage.py audit_checkpoint``: sign the current head of the audit chain."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from audit import services as audit


class Command(BaseCommand):
    help = (
        "Sign the current head of the audit chain with the platform key and "
        "store the checkpoint; print its envelope (keep a copy outside the "
        "platform). Exit status 1 if the chain since the previous checkpoint "
        "does not verify."
    )

    def handle(self, *args, **options):
        try:
            checkpoint = audit.checkpoint_create()
        except audit.AuditChainBroken as exc:
            raise CommandError(f"no checkpoint signed: {exc}", returncode=1) from exc
        if checkpoint is None:
            self.stderr.write("nothing new to sign: the head is already checkpointed")
            return
        self.stdout.write(
            json.dumps(
                {
                    "type": "checkpoint",
                    "seq": checkpoint.seq,
                    "head_hash": checkpoint.head_hash,
                    "envelope": checkpoint.envelope,
                }
            )
        )
