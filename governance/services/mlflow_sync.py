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
from governance.models import (
    Decision,
    EvaluationRun,
    OutboxKind,
    OutboxMessage,
    RunStatus,
)
from governance.services.evaluations import evaluation_tracking_record
from governance.services.outbox import (
    decision_outbox_key,
    evaluation_outbox_key,
    model_version_outbox_key,
    model_version_owed,
    model_version_spec,
    outbox_requeue,
)
from registry.models import ModelVersion


@dataclass(frozen=True)
class Drift:
    """One difference between Civitas and MLflow.

    ``kind`` is ``missing`` (no MLflow run, nothing owed), ``pending`` (no
    MLflow run, an outbox message not yet delivered), ``duplicate``,
    ``metrics`` (the values differ) or ``orphan`` (an MLflow run naming a
    Civitas run that does not exist). For the model registry, with
    ``evaluation_run_id`` naming ``model_version:<id>``: ``missing``,
    ``pending``, ``tags`` (a ``civitas.*`` tag differs), ``alias`` (a status
    alias points elsewhere), ``decision`` (a decision's tag is absent) or
    ``orphan`` (a registered version naming no Civitas version).
    """

    kind: str
    evaluation_run_id: str
    mlflow_run_id: str = ""
    detail: str = ""

    def line(self) -> str:
        """One line for the command's output."""
        if self.evaluation_run_id.startswith("model_version:"):
            parts = [self.kind, self.evaluation_run_id.replace(":", "=", 1)]
            parts.append(f"mlflow_version={self.mlflow_run_id or '-'}")
        else:
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


# Registry findings that a fresh delivery of the version's record repairs.
_VERSION_REPAIRS = frozenset({"missing", "tags", "alias"})


def evaluation_drift() -> list[Drift]:
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


def _owed_keys() -> set[str]:
    return set(
        OutboxMessage.objects.filter(delivered_at__isnull=True).values_list(
            "dedupe_key", flat=True
        )
    )


def _version_drift(version_id: int, logged, owed: set[str]) -> list[Drift]:
    """How one model version's registered record differs from Civitas."""
    label = model_version_outbox_key(version_id)
    if logged is None:
        kind = "pending" if label in owed else "missing"
        return [Drift(kind, label)]
    where = f"{logged.name}/{logged.version}"
    spec = model_version_spec(version_id)
    expected = {**spec.tags, tracking.MODEL_VERSION_TAG: str(version_id)}
    held = {
        key: value
        for key, value in logged.tags.items()
        if key.startswith("civitas.")
        and not key.startswith(tracking.DECISION_TAG_PREFIX)
    }
    findings = []
    differ = sorted(
        k for k in set(expected) | set(held) if expected.get(k) != held.get(k)
    )
    if differ and label not in owed:
        findings.append(Drift("tags", label, where, "keys=" + ",".join(differ)))
    decisions = Decision.objects.filter(model_version_id=version_id)
    for decision_id in decisions.values_list("pk", flat=True):
        tag = f"{tracking.DECISION_TAG_PREFIX}{decision_id}"
        if tag not in logged.tags and decision_outbox_key(decision_id) not in owed:
            findings.append(Drift("decision", label, where, f"decision={decision_id}"))
    return findings


def _alias_drift(logged_versions) -> list[Drift]:
    """Status aliases that do not point at the newest version in their status."""
    statuses = dict(ModelVersion.objects.values_list("pk", "status"))
    by_name = defaultdict(list)
    for logged in logged_versions:
        by_name[logged.name].append(logged)
    findings = []
    for name, versions in sorted(by_name.items()):
        want: dict[str, int] = {}
        have: dict[str, str] = {}
        for logged in versions:
            status = statuses.get(int(logged.model_version_id or 0), "")
            if status:
                want[status] = max(want.get(status, 0), int(logged.version))
            have.update(dict.fromkeys(logged.aliases, logged.version))
        known = [v.model_version_id for v in versions if v.model_version_id.isdigit()]
        known = [pk for pk in known if int(pk) in statuses]
        for alias in tracking.STATUS_ALIASES:
            expected = str(want[alias]) if alias in want else "-"
            if have.get(alias, "-") != expected:
                findings.append(
                    Drift(
                        "alias",
                        f"model_version:{known[0] if known else '-'}",
                        name,
                        f"alias={alias} mlflow={have.get(alias, '-')} "
                        f"civitas={expected}",
                    )
                )
    return findings


def registry_drift() -> list[Drift]:
    """Every difference between Civitas's model versions and MLflow's registry."""
    owed = _owed_keys()
    logged_versions = tracking.registered_versions()
    logged = {v.model_version_id: v for v in logged_versions}
    findings: list[Drift] = []
    known = set()
    for version_id in ModelVersion.objects.order_by("pk").values_list("pk", flat=True):
        known.add(str(version_id))
        findings.extend(_version_drift(version_id, logged.get(str(version_id)), owed))
    for item in logged_versions:
        if item.model_version_id not in known:
            findings.append(
                Drift(
                    "orphan",
                    f"model_version:{item.model_version_id or '-'}",
                    f"{item.name}/{item.version}",
                )
            )
    return findings + _alias_drift(logged_versions)


def _decision_requeue(decision_id: int) -> int:
    """Owe MLflow a decision's tag again, from the message that first owed it."""
    key = decision_outbox_key(decision_id)
    message = OutboxMessage.objects.filter(dedupe_key=key).first()
    if message is None:
        return 0
    outbox_requeue(kind=message.kind, dedupe_key=key, payload=message.payload)
    return 1


def mlflow_resync(findings: list[Drift]) -> int:
    """Owe MLflow again every record found missing or differing; how many queued."""
    queued = 0
    for finding in findings:
        key = finding.evaluation_run_id
        target = key.removeprefix("model_version:")
        if target != key and target.isdigit() and finding.kind in _VERSION_REPAIRS:
            model_version_owed(version_id=int(target))
            queued += 1
            continue
        if finding.kind == "decision":
            queued += _decision_requeue(int(finding.detail.split("=", 1)[1]))
            continue
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


def mlflow_drift() -> list[Drift]:
    """Evaluation runs, then the model registry: every difference found."""
    return evaluation_drift() + registry_drift()
