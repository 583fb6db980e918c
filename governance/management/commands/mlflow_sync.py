"""Report, and repair, drift between Civitas's evaluation runs and MLflow.

``manage.py mlflow_sync --check`` prints one line per finding (see
``governance.services.mlflow_sync.Drift``) and exits 1 when there is any;
without ``--check`` it also owes MLflow again, through the outbox, every
succeeded run it has no record of, and the delivery task sends them.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from governance.services import mlflow_sync


class Command(BaseCommand):
    help = (
        "Report drift between Civitas and MLflow; without --check, queue the missing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check",
            action="store_true",
            help="Only report; exit 1 when Civitas and MLflow differ.",
        )

    def handle(self, *args, check: bool = False, **options):
        findings = mlflow_sync.mlflow_drift()
        for finding in findings:
            self.stdout.write(finding.line())
        if check:
            if findings:
                raise SystemExit(1)
            self.stdout.write("no drift")
            return
        queued = mlflow_sync.mlflow_resync(findings)
        self.stdout.write(
            f"{len(findings)} finding(s); {queued} run(s) queued for MLflow"
        )
