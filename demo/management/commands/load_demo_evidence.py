"""Register the built-in suites and evaluate the demo models on them (idempotent).

``make run`` calls it after ``load_demo`` with ``--queue``: the evaluations
are then queued like any agency's and run by the Celery worker while the
portal starts, so a newcomer sees them progress and finish with real,
different figures for each demo language model, logged to MLflow. Without
``--queue`` they run here, in the foreground. A version with a queued,
running or succeeded run on the suite is not evaluated again.
"""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from governance.models import EvaluationRun, RunStatus
from governance.services import evaluations
from governance.services.suites import builtin_suites_sync
from registry.models import ArtifactState, ModelKind, ModelVersion

LM_SUITE = "civitas-core"


class Command(BaseCommand):
    help = "Register built-in suites and evaluate the demo language models on them."

    def add_arguments(self, parser):
        parser.add_argument(
            "--queue",
            action="store_true",
            help="queue the evaluations for the worker instead of running them here",
        )

    def handle(self, *args, queue: bool = False, **options):
        started = time.perf_counter()
        admin = (
            get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        )
        if admin is None:
            raise CommandError("no platform administrator: run load_demo first")
        suites = {suite.name: suite for suite in builtin_suites_sync(admin=admin)}
        core = suites[LM_SUITE]
        versions = ModelVersion.objects.filter(
            artifact_state=ArtifactState.AVAILABLE,
            kind__in=[ModelKind.CAUSAL_LM_KV, ModelKind.CAUSAL_LM],
        ).select_related("model__agency")
        evaluated = 0
        for version in versions:
            if EvaluationRun.objects.filter(
                model_version=version,
                suite=core,
                status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED],
            ).exists():
                continue
            run = evaluations.evaluation_request(
                actor=admin, model_version=version, suite=core, enqueue=queue
            )
            evaluated += 1
            if queue:
                self.stdout.write(f"  queued {version} on {core} (run {run.pk})")
                continue
            run = evaluations.evaluation_execute(run_id=run.pk)
            figures = {
                m.name: m.value
                for m in run.metrics.filter(
                    name__in=[
                        "perplexity",
                        "acc",
                        "stereotype_preference",
                        "refusal_rate",
                    ]
                )
            }
            summary = ", ".join(f"{k} {v:.3g}" for k, v in sorted(figures.items()))
            self.stdout.write(
                f"  evaluated {version} on {core}: {run.status} {summary}"
            )
        self.stdout.write(
            f"Evidence: {len(suites)} built-in suites, {evaluated} new evaluation(s) "
            f"{'queued' if queue else 'run'} "
            f"in {time.perf_counter() - started:.1f}s"
        )
