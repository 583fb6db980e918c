"""Governance's gauges on ``/metrics`` (config.metrics): evaluations by state.

Each is one aggregate query (``status`` is indexed).
"""

from __future__ import annotations

from django.db.models import Count

from config.metrics import register_gauge
from governance.models import EvaluationRun, RunStatus


def evaluations_by_status():
    """Evaluation runs in each status, every status listed (0 included)."""
    counts = dict(
        EvaluationRun.objects.order_by().values_list("status")
        .annotate(n=Count("pk")).values_list("status", "n")
    )
    return [({"status": status}, counts.get(status, 0)) for status in RunStatus.values]


def failed_by_code():
    """Failed evaluation runs per failure code."""
    rows = (
        EvaluationRun.objects.filter(status=RunStatus.FAILED).order_by()
        .values_list("failure_code").annotate(n=Count("pk"))
        .values_list("failure_code", "n")
    )
    return [({"failure_code": code or "unknown"}, n) for code, n in rows]


def outbox_backlog():
    """What MLflow is owed: undelivered messages, and those whose attempt failed."""
    from governance.services.outbox import outbox_backlog as backlog

    return [({"state": state}, n) for state, n in sorted(backlog().items())]


def register() -> None:
    """Called from ``GovernanceConfig.ready``."""
    register_gauge("civitas_evaluations", "Evaluation runs by status",
                   evaluations_by_status)
    register_gauge("civitas_evaluations_failed",
                   "Failed evaluation runs by failure code", failed_by_code)
    register_gauge("civitas_mlflow_outbox",
                   "Outbox messages owed to MLflow, by state", outbox_backlog)
