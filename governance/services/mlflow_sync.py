"""Drift between the evaluations Civitas holds and the runs MLflow holds.

Both directions: a succeeded run with no MLflow run (or one still owed in the
outbox), with more than one, or with other metrics; and an MLflow run of the
experiment that names a Civitas run that does not exist. ``manage.py
mlflow_sync --check`` prints the findings; without ``--check`` it owes MLflow
again what is missing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from governance import tracking
from governance.models import EvaluationRun, OutboxKind, OutboxMessage, RunStatus
from governance.services.evaluations import evaluation_tracking_record
from governance.services.outbox import evaluation_outbox_key, outbox_requeue


@dataclass(frozen=True)
class Drift:
    """One difference between Civitas and MLflow.

    ``kind`` is ``missing`` (no MLflow run, nothing owed), ``pending`` (no
    MLflow run, an outbox message not yet delivered), ``duplicate``,
    ``metrics`` (the values differ) or ``orphan`` (an MLflow run naming a
    Civitas run that does not exist).
    """

    kind: str
    evaluation_run_id: str
    mlflow_run_id: str = ""
    detail: str = ""

    def line(self) -> str:
        """One line for the command's output."""
        parts = [self.kind, f"evaluation_run={self.evaluation_run_id or '-'}"]
        parts.append(f"mlflow_run={self.mlflow_run_id or '-'}")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)


def _metrics_differ(expected: dict[str, float], logged: dict[str, float]) -> list[str]:
    keys = sorted(set(expected) | set(logged))
    return [
        key
        for key in keys
        if key not in expected
        or key not in logged
        or not math.isclose(expected[key], logged[key], rel_tol=1e-9, abs_tol=0.0)
    ]


def _succeeded_drift(logged: dict[str, list]) -> list[Drift]:
    owed = set(
        OutboxMessage.objects.filter(delivered_at__isnull=True).values_list(
            "dedupe_key", flat=True
        )
    )
    findings = []
    runs = EvaluationRun.objects.filter(status=RunStatus.SUCCEEDED).order_by("pk")
    for run in runs.prefetch_related("metrics").iterator(chunk_size=500):
        found = logged.get(str(run.pk), [])
        if not found:
            kind = "pending" if evaluation_outbox_key(run.pk) in owed else "missing"
            findings.append(Drift(kind, str(run.pk)))
            continue
        if len(found) > 1:
            ids = ",".join(sorted(summary.run_id for summary in found))
            findings.append(Drift("duplicate", str(run.pk), detail=f"runs={ids}"))
            continue
        expected = {f"{m.task}.{m.name}": m.value for m in run.metrics.all()}
        differ = _metrics_differ(expected, found[0].metrics)
        if differ:
            findings.append(
                Drift(
                    "metrics",
                    str(run.pk),
                    found[0].run_id,
                    detail="keys=" + ",".join(differ[:10]),
                )
            )
    return findings


def mlflow_drift() -> list[Drift]:
    """Every difference between Civitas's evaluation runs and MLflow's experiment."""
    logged: dict[str, list] = defaultdict(list)
    for summary in tracking.experiment_runs():
        logged[summary.evaluation_run_id].append(summary)
    findings = _succeeded_drift(logged)
    named = {key for key in logged if key.isdigit()}
    existing = {
        str(pk)
        for pk in EvaluationRun.objects.filter(
            pk__in=[int(key) for key in named]
        ).values_list("pk", flat=True)
    }
    for key, summaries in sorted(logged.items()):
        if key not in existing:
            findings.extend(
                Drift("orphan", key, summary.run_id) for summary in summaries
            )
    return findings


def mlflow_resync(findings: list[Drift]) -> int:
    """Owe MLflow again every succeeded run found ``missing``; how many were queued."""
    queued = 0
    for finding in findings:
        if finding.kind != "missing":
            continue
        run = EvaluationRun.objects.select_related(
            "model_version__model__agency", "suite"
        ).get(pk=int(finding.evaluation_run_id))
        outbox_requeue(
            kind=OutboxKind.EVALUATION_RUN,
            dedupe_key=evaluation_outbox_key(run.pk),
            payload={
                "evaluation_run_id": run.pk,
                "record": evaluation_tracking_record(run).to_json(),
            },
        )
        queued += 1
    return queued
