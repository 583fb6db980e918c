"""`manage.py evaluate <version> --suite <name>`: one run, in the foreground."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from config.exceptions import DomainError
from governance.models import EvaluationSuite, RunStatus
from governance.services import evaluations as evaluation_services
from governance.services import outbox
from registry.models import ModelVersion


def _version(reference: str) -> ModelVersion:
    """A version by id or by ``agency/model@version``."""
    versions = ModelVersion.objects.select_related("model__agency")
    if reference.isdigit():
        found = versions.filter(pk=int(reference)).first()
    else:
        path, _, number = reference.partition("@")
        agency, _, model = path.partition("/")
        found = versions.filter(
            model__agency__slug=agency, model__slug=model, version=number
        ).first()
    if found is None:
        raise CommandError(
            f"no model version '{reference}' (use an id or agency/model@1.0.0)"
        )
    return found


class Command(BaseCommand):
    help = (
        "Evaluate a model version on a suite now, in this process, with a progress bar."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", help="model version id or agency/model@1.0.0")
        parser.add_argument("--suite", required=True, help="suite name or name@version")
        parser.add_argument(
            "--user",
            default=None,
            help="the person asking (default: the first platform administrator)",
        )

    def handle(self, *args, version: str, suite: str, user: str | None, **options):
        model_version = _version(version)
        name, _, number = suite.partition("@")
        suites = EvaluationSuite.objects.filter(name=name)
        if number:
            suites = suites.filter(version=number)
        suite_row = suites.order_by("-created_at").first()
        if suite_row is None:
            raise CommandError(f"no suite '{suite}'")
        users = get_user_model().objects
        actor = (
            users.filter(username=user).first()
            if user
            else users.filter(is_superuser=True).order_by("pk").first()
        )
        if actor is None:
            raise CommandError(f"no user '{user or 'superuser'}'")
        try:
            run = evaluation_services.evaluation_request(
                actor=actor, model_version=model_version, suite=suite_row, enqueue=False
            )
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        bars: dict[str, tqdm] = {}

        def progress(event: dict) -> None:
            task = str(event.get("task", ""))
            bar = bars.get(task)
            if bar is None:
                bar = bars[task] = tqdm(total=event.get("total", 0), desc=task)
            bar.n = event.get("done", 0)
            bar.refresh()

        run = evaluation_services.evaluation_execute(run_id=run.pk, progress=progress)
        for bar in bars.values():
            bar.close()
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(
                f"run {run.pk} {run.status}: {run.failure_code}: {run.failure_reason}"
            )
        # What MLflow is owed went to the outbox with the run; deliver it now,
        # within a bound, so the command can name the MLflow run.
        outbox.outbox_deliver(budget_s=30)
        run.refresh_from_db()
        tracked = run.mlflow_run_id or "owed: delivered when MLflow answers"
        self.stdout.write(f"run {run.pk} succeeded (MLflow run {tracked})")
        for metric in run.metrics.all():
            self.stdout.write(
                f"  {metric.task:<28} {metric.name:<36} {metric.value:.6g}"
            )
