"""The ``substantial_modification`` rule: a derived version changed too much.

A version that names a base version is compared with it when released
(``governance.services.modifications``). This rule reads the newest
assessment against the current base and digest, and fails, so that the use
case needs a new review, when the change is substantial by the policy's
bounds: an architecture or tokenizer change (unless set to false), a
quantisation (if set to true), a per-tensor relative weight change above
``max_relative_change``, or a metric drop on a shared suite above
``max_metric_drop`` (measured now, from both versions' latest successful
runs). A missing or failed assessment fails the rule: what cannot be shown
is not assumed.
"""

from __future__ import annotations

from typing import Any

from django.db.models import F

from governance.models import (
    AssessmentStatus,
    EvaluationRun,
    ModificationAssessment,
    RunStatus,
)
from governance.rules.facts import Facts, Outcome, _verdict, readable_number
from registry.models import ModelVersion

_CLASS_DEFAULTS = {
    "architecture_change": True,
    "tokenizer_change": True,
    "quantisation": False,
}


def _latest_runs(version: ModelVersion) -> dict[int, EvaluationRun]:
    """The latest successful run per suite on the version's current digest."""
    runs = (
        EvaluationRun.objects.filter(
            model_version_id=version.pk,
            artifact_digest=version.artifact_digest,
            status=RunStatus.SUCCEEDED,
        )
        .select_related("suite")
        .prefetch_related("metrics")
        .order_by("suite_id", F("finished_at").desc(nulls_last=True), "-pk")
    )
    latest: dict[int, EvaluationRun] = {}
    for run in runs:
        latest.setdefault(run.suite_id, run)
    return latest


def evaluation_deltas(
    *, version: ModelVersion, base: ModelVersion
) -> list[dict[str, Any]]:
    """Metric deltas (derived - base) on every suite both versions succeeded on.

    One entry per shared suite: ``{suite, base_run, run, metrics: [{task,
    name, base, derived, delta}]}``, metrics measured by both runs only.
    """
    mine, theirs = _latest_runs(version), _latest_runs(base)
    deltas = []
    for suite_id in sorted(mine.keys() & theirs.keys()):
        run, base_run = mine[suite_id], theirs[suite_id]
        before = {(m.task, m.name): m.value for m in base_run.metrics.all()}
        metrics = [
            {
                "task": m.task,
                "name": m.name,
                "base": before[(m.task, m.name)],
                "derived": m.value,
                "delta": m.value - before[(m.task, m.name)],
            }
            for m in run.metrics.all()
            if (m.task, m.name) in before
        ]
        deltas.append(
            {
                "suite": str(run.suite),
                "base_run": base_run.pk,
                "run": run.pk,
                "metrics": metrics,
            }
        )
    return deltas


def _metric_drops(rule: dict[str, Any], facts: Facts) -> list[str]:
    """Sentences for every metric whose drop exceeds ``max_metric_drop``."""
    limit = rule["max_metric_drop"]
    wanted = set(rule.get("metrics", []))
    found = []
    base = facts.version.base_version
    for suite in evaluation_deltas(version=facts.version, base=base):
        for metric in suite["metrics"]:
            name = f"{metric['task']}.{metric['name']}"
            drop = -metric["delta"]
            if (not wanted or name in wanted) and drop > limit:
                found.append(
                    f"{name} on {suite['suite']} dropped by {readable_number(drop)} "
                    f"(from {readable_number(metric['base'])} to "
                    f"{readable_number(metric['derived'])}; at most "
                    f"{readable_number(limit)})."
                )
    return found


def substantial_modification(rule: dict[str, Any], facts: Facts) -> Outcome:
    """Fail when the version's change from its base is substantial by the rule."""
    version = facts.version
    if version.base_version_id is None:
        return _verdict([], {}, f"{version} names no base version.", applicable=False)
    assessment = ModificationAssessment.objects.current_for(version)
    evidence: dict[str, Any] = {"base_version_id": version.base_version_id}
    if assessment is None or assessment.status != AssessmentStatus.COMPLETED:
        why = "has not been compared" if assessment is None else "could not be compared"
        return _verdict(
            [f"{version} {why} with its base version, so the change is unknown."],
            evidence,
            "",
        )
    evidence.update(
        assessment_id=assessment.pk,
        classes=assessment.classes,
        max_relative_change=assessment.max_relative_change,
    )
    violations = [
        f"The change from the base is a {name.replace('_', ' ')} "
        f"({'; '.join(assessment.reasons.get(name, []))})."
        for name, default in _CLASS_DEFAULTS.items()
        if rule.get(name, default) and name in assessment.classes
    ]
    limit = rule.get("max_relative_change")
    change = assessment.max_relative_change
    if limit is not None and (change is None or change > limit):
        shown = "unbounded" if change is None else readable_number(change)
        violations.append(
            f"A weight tensor changed by {shown} relative to the base, above "
            f"{readable_number(limit)}."
        )
    if "max_metric_drop" in rule:
        violations.extend(_metric_drops(rule, facts))
    if violations:
        violations.append("A new review is required.")
    return _verdict(
        violations,
        evidence,
        f"The change from the base ({', '.join(assessment.classes)}) is within "
        "the policy's bounds.",
    )
