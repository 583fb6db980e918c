"""The ``required_suite`` rule: an agency suite the version must pass.

``{"kind": "required_suite", "suite": "<name>", "min_version"?: "1.2",
"max_age_days"?: n}`` passes when the latest successful run on the version's
exact artifact digest of that suite (any version, or ``min_version`` or
later) met every threshold of the suite version it ran. No run, a stale run,
or a run that missed a threshold fails; a suite that cannot run on the
version's kind of model does not apply. See docs/governance.md.
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import F

from governance.models import EvaluationRun, EvaluationSuite, RuleStatus, RunStatus
from governance.rules.facts import Facts, Outcome, _iso, _short, readable_number

_NUMBERS = re.compile(r"^\d+(\.\d+)*")


def version_key(version: str) -> tuple[int, ...] | None:
    """``"1.10.0-rc1"`` -> ``(1, 10, 0)``; None when it starts with no number.

    Trailing zeros are dropped, so ``1.2`` and ``1.2.0`` are the same version.
    """
    match = _NUMBERS.match(version)
    if match is None:
        return None
    parts = [int(p) for p in match.group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def eligible_suites(name: str, min_version: str | None) -> list[EvaluationSuite]:
    """Versions of suite ``name`` that count: all, or ``min_version`` and later."""
    suites = list(EvaluationSuite.objects.filter(name=name))
    if min_version is None:
        return suites
    floor = version_key(min_version)
    return [
        s
        for s in suites
        if (key := version_key(s.version)) is not None and key >= floor
    ]


def _latest_run(facts: Facts, suites: list[EvaluationSuite]) -> EvaluationRun | None:
    return (
        EvaluationRun.objects.filter(
            model_version_id=facts.version.pk,
            artifact_digest=facts.version.artifact_digest,
            status=RunStatus.SUCCEEDED,
            suite__in=suites,
        )
        .select_related("suite")
        .order_by(F("finished_at").desc(nulls_last=True), "-pk")
        .first()
    )


def _missed(verdicts: list[dict]) -> str:
    parts = []
    for v in verdicts:
        if v["passed"]:
            continue
        value = "not measured" if v["value"] is None else readable_number(v["value"])
        bounds = " and ".join(
            f"{word} {readable_number(v[key])}"
            for key, word in (("min", "at least"), ("max", "at most"))
            if key in v
        )
        parts.append(f"{v['metric']} is {value} (needs {bounds})")
    return "; ".join(parts)


def required_suite(rule: dict[str, Any], facts: Facts) -> Outcome:
    """Evaluate one ``required_suite`` rule on the facts of a use case."""
    version, name = facts.version, rule["suite"]
    min_version = rule.get("min_version")
    wanted = f"{name} {min_version} or later" if min_version else f"{name}"
    evidence: dict[str, Any] = {
        "suite": name,
        "min_version": min_version,
        "artifact_digest": version.artifact_digest,
        "run_id": None,
    }
    if "max_age_days" in rule:
        evidence["max_age_days"] = rule["max_age_days"]
    suites = eligible_suites(name, min_version)
    if not suites:
        return Outcome(
            RuleStatus.FAILED, f"No evaluation suite {wanted} exists.", evidence
        )
    reasons = (
        [s.unsupported_reason(version.kind) for s in suites] if version.kind else []
    )
    if reasons and all(reasons):
        evidence["model_kind"] = version.kind
        return Outcome(
            RuleStatus.NOT_APPLICABLE,
            f"Suite {wanted} does not apply to {version}: {reasons[0]}.",
            evidence,
        )
    run = _latest_run(facts, suites) if version.artifact_digest else None
    if run is None:
        return Outcome(
            RuleStatus.FAILED,
            f"No successful run of suite {wanted} on artifact "
            f"{_short(version.artifact_digest)} exists; an evaluation of this "
            "exact artifact is needed.",
            evidence,
        )
    finished = run.finished_at or run.requested_at
    age_days = (facts.now - finished).total_seconds() / 86400
    # The suite version's thresholds on the run's metrics: a suite is immutable
    # once used, so this is what the run recorded, and holds for older runs.
    verdicts = run.suite.threshold_verdicts(run.results or [])
    evidence.update(
        run_id=run.pk,
        suite_version=run.suite.version,
        finished_at=_iso(finished),
        age_days=round(age_days, 2),
        thresholds=verdicts,
    )
    where = f"run {run.pk} ({run.suite}, finished {finished:%Y-%m-%d})"
    limit = rule.get("max_age_days")
    if limit is not None and age_days > limit:
        evidence["stale"] = True
        return Outcome(
            RuleStatus.FAILED,
            f"The latest successful run is stale: {where} is {age_days:.1f} days "
            f"old, beyond the limit of {limit} days; a new evaluation is needed.",
            evidence,
        )
    if not all(v["passed"] for v in verdicts):
        return Outcome(
            RuleStatus.FAILED,
            f"{where} missed the suite's thresholds: {_missed(verdicts)}.",
            evidence,
        )
    met = (
        f"met all {len(verdicts)} threshold(s) of the suite"
        if verdicts
        else "succeeded (the suite sets no thresholds)"
    )
    return Outcome(RuleStatus.PASSED, f"{where} {met}.", evidence)
