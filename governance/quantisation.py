"""The trade a derived version makes, read from its and its parent's runs.

Every platform-derived version (``quantised`` and ``optimised``; a quantised
version of an optimised one against that direct parent) has this evidence.
``quantisation_evidence`` pairs the latest succeeded run of the version and
of its base version on every suite both were evaluated on (runs of the
current artifact digests only) and compares them task by task: quality
(perplexity ratio, accuracy delta, greedy agreement of the generated
answers on the refusal prompts) beside cost (throughput, peak memory and
energy per thousand tokens, as ratios version / parent). The summary keeps
the worst quality figure and the geometric mean of each cost ratio; the
policy rule ``quantisation`` (``governance.rules.checks``) bounds it for
quantised and optimised versions alike (a fused graph should lose nothing).
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.core.files.storage import storages
from django.db.models import F

from governance.models import EvaluationRun, RunStatus
from governance.rules.facts import Facts, Outcome, _verdict
from registry.models import ModelVersion

PERPLEXITY = "perplexity"
ACCURACY_METRICS = ("acc", "accuracy")
COST_METRICS = {
    "speed_ratio": "tokens_per_s",
    "memory_ratio": "peak_rss_mb",
    "energy_ratio": "energy_j_per_1k_tokens",
}
_MAX_ITEMS_BYTES = 32 * 1024**2
# The derivations the platform makes, whose trade it shows and bounds.
PLATFORM_DERIVATIONS = ("quantised", "optimised")


def _latest_runs(version: ModelVersion) -> dict[int, EvaluationRun]:
    """The latest succeeded run of the version's current artifact, per suite."""
    runs = (
        EvaluationRun.objects.filter(
            model_version=version,
            artifact_digest=version.artifact_digest,
            status=RunStatus.SUCCEEDED,
        )
        .select_related("suite")
        .prefetch_related("metrics")
        .order_by(F("finished_at").desc(nulls_last=True), "-pk")
    )
    latest: dict[int, EvaluationRun] = {}
    for run in runs:
        latest.setdefault(run.suite_id, run)
    return latest


def _metrics(run: EvaluationRun) -> dict[str, dict[str, float]]:
    by_task: dict[str, dict[str, float]] = {}
    for metric in run.metrics.all():
        by_task.setdefault(metric.task, {})[metric.name] = metric.value
    return by_task


def _outputs(run: EvaluationRun) -> dict[tuple[str, str], str]:
    """(task, item id) -> generated output, from the run's stored items."""
    if not run.items_key:
        return {}
    store = storages["artifacts"]
    try:
        if store.size(run.items_key) > _MAX_ITEMS_BYTES:
            return {}
        with store.open(run.items_key, "rb") as handle:
            lines = handle.read().decode("utf-8").splitlines()
    except OSError:
        return {}
    outputs = {}
    for line in lines:
        item = json.loads(line)
        if isinstance(item.get("output"), str) and "should_refuse" in item:
            outputs[(item.get("task"), str(item.get("id")))] = item["output"]
    return outputs


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def _geomean(values: list[float]) -> float | None:
    kept = [v for v in values if v is not None and v > 0]
    if not kept:
        return None
    return math.exp(sum(math.log(v) for v in kept) / len(kept))


def _compare_task(
    task: str, ours: dict[str, float], theirs: dict[str, float]
) -> dict[str, Any]:
    row: dict[str, Any] = {"task": task}
    if PERPLEXITY in ours and PERPLEXITY in theirs:
        row["perplexity_ratio"] = _ratio(ours[PERPLEXITY], theirs[PERPLEXITY])
    for name in ACCURACY_METRICS:
        if name in ours and name in theirs:
            row["accuracy_delta"] = ours[name] - theirs[name]
            break
    for figure, metric in COST_METRICS.items():
        row[figure] = _ratio(ours.get(metric), theirs.get(metric))
    return row


def _agreement(run: EvaluationRun, parent_run: EvaluationRun) -> dict[str, float]:
    """Per task, the share of refusal prompts answered identically."""
    ours, theirs = _outputs(run), _outputs(parent_run)
    shared: dict[str, list[bool]] = {}
    for key, text in ours.items():
        if key in theirs:
            shared.setdefault(key[0], []).append(text == theirs[key])
    return {task: sum(same) / len(same) for task, same in shared.items() if same}


def _suite_rows(run: EvaluationRun, parent_run: EvaluationRun) -> list[dict]:
    ours, theirs = _metrics(run), _metrics(parent_run)
    agreement = _agreement(run, parent_run)
    rows = []
    for task in sorted(set(ours) & set(theirs)):
        row = _compare_task(task, ours[task], theirs[task])
        if task in agreement:
            row["greedy_agreement"] = agreement[task]
        rows.append(row)
    return rows


def _summary(rows: list[dict]) -> dict[str, float | None]:
    def values(key: str) -> list[float]:
        return [r[key] for r in rows if r.get(key) is not None]

    summary: dict[str, float | None] = {
        "max_perplexity_ratio": max(values("perplexity_ratio"), default=None),
        "min_accuracy_delta": min(values("accuracy_delta"), default=None),
        "min_greedy_agreement": min(values("greedy_agreement"), default=None),
    }
    for figure in COST_METRICS:
        summary[figure] = _geomean(values(figure))
    return summary


def quantisation_evidence(version: ModelVersion) -> dict[str, Any]:
    """Quality and cost of ``version`` against its base version, per shared suite.

    ``{"parent", "derivation", "derivation_settings", "suites": [{"suite",
    "run", "parent_run", "tasks": [...]}], "summary": {...}}``; without a
    base version, or before both have a run on a common suite, ``suites`` is
    empty and every summary figure is null. The caller checks visibility.
    """
    parent = version.base_version
    result: dict[str, Any] = {
        "version": version.pk,
        "parent": parent.pk if parent is not None else None,
        "derivation": version.derivation,
        "derivation_settings": version.derivation_settings,
        "suites": [],
    }
    rows: list[dict] = []
    if parent is not None:
        ours, theirs = _latest_runs(version), _latest_runs(parent)
        for suite_id in sorted(set(ours) & set(theirs)):
            run, parent_run = ours[suite_id], theirs[suite_id]
            tasks = _suite_rows(run, parent_run)
            rows += tasks
            result["suites"].append(
                {
                    "suite": f"{run.suite.name}@{run.suite.version}",
                    "run": run.pk,
                    "parent_run": parent_run.pk,
                    "tasks": tasks,
                }
            )
    result["summary"] = _summary(rows)
    return result


# --- the policy rule ``quantisation`` ------------------------------------------


def _bound_violations(rule: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The rule's bounds that the summary breaks or cannot show it keeps."""
    bounds = (
        ("max_perplexity_ratio", "max_perplexity_ratio", "perplexity ratio", 1),
        ("max_accuracy_drop", "min_accuracy_delta", "accuracy drop", -1),
        ("min_greedy_agreement", "min_greedy_agreement", "greedy agreement", 0),
    )
    violations = []
    for key, figure, label, sign in bounds:
        if key not in rule:
            continue
        value = summary.get(figure)
        if value is None:
            violations.append(f"No shared run measures the {label}.")
            continue
        limit = rule[key]
        broken = {
            1: value > limit,  # an upper bound on the ratio
            -1: -value > limit,  # a drop is a negative delta
            0: value < limit,  # a lower bound on the agreement
        }[sign]
        if broken:
            shown = -value if sign == -1 else value
            violations.append(f"The {label} is {shown:.4g}, beyond the bound {limit}.")
    return violations


def quantisation_rule(rule: dict[str, Any], facts: Facts) -> Outcome:
    """Bound the quality a derived version loses against its base version.

    Applies to ``quantised`` and ``optimised`` versions with a base version
    (an optimised graph should lose nothing: the same bounds hold it), not
    to others; a bound that no shared run measures fails (no evidence is
    not a pass).
    """
    version = facts.version
    if (
        version.derivation not in PLATFORM_DERIVATIONS
        or version.base_version_id is None
    ):
        return _verdict(
            [], {"derivation": version.derivation},
            "Not a quantised or optimised version.", applicable=False,
        )  # fmt: skip
    evidence = quantisation_evidence(version)
    summary = evidence["summary"]
    recorded = {
        "derivation": version.derivation,
        "parent": evidence["parent"],
        "suites": [s["suite"] for s in evidence["suites"]],
        **summary,
    }
    violations = _bound_violations(rule, summary)
    return _verdict(
        violations, recorded, "The quality loss against the base is within bounds."
    )
