"""The demo catalogue's language models carry real evaluations on built-in suites."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from governance.models import EvaluationRun, RunMetric, RunStatus
from registry.models import ModelKind, ModelVersion

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def test_demo_evidence_evaluates_every_demo_lm_once(mlflow_store):
    call_command("load_demo", stdout=StringIO())

    call_command("load_demo_evidence", stdout=StringIO())
    runs_after_first = EvaluationRun.objects.count()
    call_command("load_demo_evidence", stdout=StringIO())

    lms = ModelVersion.objects.filter(kind=ModelKind.CAUSAL_LM_KV)
    assert lms.count() >= 4
    assert EvaluationRun.objects.count() == runs_after_first == lms.count()
    assert not EvaluationRun.objects.exclude(status=RunStatus.SUCCEEDED).exists()
    perplexities = {
        metric.run.model_version.model.slug: metric.value
        for metric in RunMetric.objects.filter(name="perplexity").select_related(
            "run__model_version__model"
        )
    }
    assert len(set(perplexities.values())) == len(perplexities)  # real, different
    assert all(value > 1 for value in perplexities.values())
