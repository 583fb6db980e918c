"""Create or upgrade the MLflow tracking store's schema before anything uses it.

Run next to ``migrate``: by ``make run`` (deploy/run-local.sh), by the
compose file's migrate service and by the Procfile's release step. With a
tracking server (``MLFLOW_TRACKING_URI`` http/https) there is nothing to do.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from governance import tracking


class Command(BaseCommand):
    help = "Create or upgrade the MLflow tracking store's schema (idempotent)."

    def handle(self, *args, **options):
        self.stdout.write(tracking.store_migrate())
