"""The demo catalogue's language models carry real evaluations on built-in suites."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from governance.models import EvaluationRun, RunMetric, RunStatus
from governance.services import evaluations as evaluation_services
from registry.models import ModelKind, ModelVersion
from tests.conftest import queued_tasks

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def test_demo_evidence_queues_one_evaluation_per_demo_lm(
    mlflow_store, django_capture_on_commit_callbacks
):
    """What make run does: queue for the worker; a second start adds nothing."""
    call_command("load_demo", stdout=StringIO())

    with django_capture_on_commit_callbacks() as queued:
        call_command("load_demo_evidence", "--queue", stdout=StringIO())
    lms = ModelVersion.objects.filter(kind=ModelKind.CAUSAL_LM_KV)
    assert lms.count() >= 4
    assert len(queued_tasks(queued)) == lms.count()
    assert set(EvaluationRun.objects.values_list("status", flat=True)) == {"queued"}

    # What the worker does with each queued message.
    for run_id in EvaluationRun.objects.values_list("pk", flat=True):
        evaluation_services.evaluation_execute(run_id=run_id)
    with django_capture_on_commit_callbacks() as again:
        call_command("load_demo_evidence", "--queue", stdout=StringIO())
    call_command("load_demo_evidence", stdout=StringIO())  # foreground: nothing left

    assert queued_tasks(again) == []
    assert EvaluationRun.objects.count() == lms.count()
    assert not EvaluationRun.objects.exclude(status=RunStatus.SUCCEEDED).exists()
    perplexities = {
        metric.run.model_version.model.slug: metric.value
        for metric in RunMetric.objects.filter(name="perplexity").select_related(
            "run__model_version__model"
        )
    }
    assert len(set(perplexities.values())) == len(perplexities)  # real, different
    assert all(value > 1 for value in perplexities.values())
