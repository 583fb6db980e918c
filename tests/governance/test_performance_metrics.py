"""Speed, memory and energy figures reach the API and MLflow as metrics (issue 8, 13).

The engine reports them inside ``results[].metrics`` as well as in
``performance``; governance flattens every task's metrics into ``RunMetric``
rows and MLflow metrics, so they can be filtered and charted like quality
metrics. The run executes in-process (real sandbox child, ONNX Runtime and
MLflow store), as the worker task would.
"""

from __future__ import annotations

import pytest

from governance import tracking
from governance.models import RunMetric, RunStatus
from governance.services import evaluations as services
from governance.services import outbox
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db

PERFORMANCE = {
    "tokens_per_s",
    "items_per_s",
    "latency_p50_s",
    "latency_p95_s",
    "wall_s",
    "model_load_s",
    "cpu_s",
    "cpu_s_per_1k_tokens",
    "peak_rss_mb",
    "energy_j",
    "energy_j_per_1k_tokens",
}


def test_performance_figures_are_stored_and_logged_as_metrics(
    released_lm_version, small_suite, member_a, mlflow_store
):
    run = services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    run = services.evaluation_execute(run_id=run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.failure_reason

    stored = {(m.task, m.name): m.value for m in RunMetric.objects.filter(run=run)}
    for task in ("perplexity", "multiple_choice"):
        for name in ("tokens_per_s", "peak_rss_mb", "energy_j_per_1k_tokens"):
            assert stored[(task, name)] > 0, (task, name)
    assert {n for t, n in stored if t == "perplexity"} >= PERFORMANCE

    body = token_client(member_a).get(f"/api/v1/evaluations/{run.pk}/").json()
    api = {(m["task"], m["name"]): m["value"] for m in body["metrics"]}
    assert api[("perplexity", "tokens_per_s")] == pytest.approx(
        stored[("perplexity", "tokens_per_s")]
    )

    outbox.outbox_deliver()  # what the task queued on commit does
    run.refresh_from_db()
    logged = tracking.read_run(run.mlflow_run_id).metrics
    assert logged["multiple_choice.peak_rss_mb"] == pytest.approx(
        stored[("multiple_choice", "peak_rss_mb")]
    )
    assert logged["perplexity.energy_j_per_1k_tokens"] == pytest.approx(
        stored[("perplexity", "energy_j_per_1k_tokens")]
    )
