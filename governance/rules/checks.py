"""The policy engine: one evaluator per rule kind, and ``evaluate``.

A policy's ``rules`` is a list validated against
``schemas/policy.schema.json`` (JSON Schema Draft 2020-12) and then by
``validate_rules`` for what a schema cannot say (unique rule ids, SPDX
spelling, known suites, ``min`` <= ``max``). ``evaluate`` reads the facts of
one use case (its model version, lineage, datasets, evaluation runs) and
returns one outcome per rule of every policy given: ``passed``, ``failed``
or ``not_applicable``, with the evidence and a sentence a reviewer can read.
Evidence that is missing (an unrecorded jurisdiction, no run, no training
data) fails the rule: what cannot be shown is not assumed.

This module only reads; ``governance.services.policies.policy_evaluate``
stores the outcomes as a ``PolicyResult``. See docs/governance.md, "Policies".
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import license_expression

from governance.models import (
    EvaluationRun,
    EvaluationSuite,
    Policy,
    RuleStatus,
    UseCase,
)
from governance.quantisation import quantisation_rule
from governance.rules.facts import (
    Facts,
    Outcome,
    _iso,
    _list,
    _short,
    _verdict,
    readable_number,
)
from governance.rules.modification import substantial_modification
from governance.rules.suites import required_suite
from registry import lineage
from registry.models import (
    DatasetRole,
    DatasetVersion,
    PersonalData,
)

logger = logging.getLogger(__name__)

# ISO 3166-1 alpha-2 codes of the member states (Greece is GR in ISO 3166).
EU_MEMBER_STATES = frozenset(
    {
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR",
        "HR", "HU", "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO",
        "SE", "SI", "SK",
    }
)  # fmt: skip
EEA_MEMBER_STATES = EU_MEMBER_STATES | {"IS", "LI", "NO"}
JURISDICTION_GROUPS = {"EU": EU_MEMBER_STATES, "EEA": EEA_MEMBER_STATES}

# GDPR Recital 26: pseudonymised data is still personal data.
PERSONAL = frozenset({PersonalData.PERSONAL, PersonalData.PSEUDONYMISED})
_ROLE_NOUN = {
    DatasetRole.TRAINING: "training data",
    DatasetRole.FINE_TUNING: "fine-tuning data",
    DatasetRole.EVALUATION: "evaluation data",
}
# Model-card fields held by the model family rather than the version.
_MODEL_FIELDS = frozenset(
    {"description", "intended_use", "out_of_scope_uses", "domain"}
)
_REF_PREFIX = re.compile(r"\bLicenseRef-", re.IGNORECASE)


def _suite_reason(suites: list[EvaluationSuite], kind: str) -> str | None:
    """Why none of the suites can run on a model of this kind, or None."""
    reasons = [suite.unsupported_reason(kind) for suite in suites]
    return None if any(r is None for r in reasons) else reasons[0]


def _unmeasurable(
    facts: Facts, reference: str, metric: str, evidence: dict[str, Any]
) -> Outcome | None:
    """Why the rule's metric cannot be measured on this version, or None.

    No such suite or no verified artifact fails; a suite that cannot run on
    the version's kind of model does not apply.
    """
    version = facts.version
    suites = facts.suites(reference)
    if not suites:
        return Outcome(
            RuleStatus.FAILED,
            f"No evaluation suite named {reference} exists, so {metric} cannot be "
            "measured.",
            evidence,
        )
    if not version.artifact_digest:
        return Outcome(
            RuleStatus.FAILED,
            f"{version} has no verified artifact yet, so no evaluation of it can "
            "count.",
            evidence,
        )
    # An unknown kind is not a reason to skip: only a known misfit is.
    reason = _suite_reason(suites, version.kind) if version.kind else None
    if reason:
        evidence["model_kind"] = version.kind
        return Outcome(
            RuleStatus.NOT_APPLICABLE,
            f"Suite {reference} does not apply to {version}: {reason}.",
            evidence,
        )
    return None


def _required_evaluation(rule: dict[str, Any], facts: Facts) -> Outcome:
    version, reference, metric = facts.version, rule["suite"], rule["metric"]
    task, _, name = metric.partition(".")
    bounds = {key: rule[key] for key in ("min", "max", "max_age_days") if key in rule}
    evidence: dict[str, Any] = {
        "suite": reference,
        "metric": metric,
        "artifact_digest": version.artifact_digest,
        "run_id": None,
        **bounds,
    }
    unmeasurable = _unmeasurable(facts, reference, metric, evidence)
    if unmeasurable is not None:
        return unmeasurable
    run = facts.latest_run(reference)
    if run is None:
        return Outcome(
            RuleStatus.FAILED,
            f"No successful run of suite {reference} on artifact "
            f"{_short(version.artifact_digest)} exists; an evaluation of this "
            "exact artifact is needed.",
            evidence,
        )
    finished = run.finished_at or run.requested_at
    age_days = (facts.now - finished).total_seconds() / 86400
    values = {(m.task, m.name): m.value for m in run.metrics.all()}
    value = values.get((task, name))
    evidence.update(
        run_id=run.pk,
        suite_version=run.suite.version,
        finished_at=_iso(finished),
        age_days=round(age_days, 2),
        value=value,
    )
    where = (
        f"run {run.pk} ({run.suite}, finished {finished:%Y-%m-%d}) on "
        f"{_short(run.artifact_digest)}"
    )
    limit = rule.get("max_age_days")
    if limit is not None and age_days > limit:
        evidence["stale"] = True
        return Outcome(
            RuleStatus.FAILED,
            f"The latest successful run is stale: {where} is {age_days:.1f} days "
            f"old, beyond the limit of {limit} days; a new evaluation is needed.",
            evidence,
        )
    if value is None:
        return Outcome(
            RuleStatus.FAILED,
            f"The latest successful run, {where}, recorded no metric {metric}.",
            evidence,
        )
    return _within_bounds(rule, metric, value, where, evidence)


def _within_bounds(
    rule: dict[str, Any], metric: str, value: float, where: str, evidence: dict
) -> Outcome:
    """Failed when the measured value is outside the rule's ``min``/``max``."""
    if "min" in rule and value < rule["min"]:
        return Outcome(
            RuleStatus.FAILED,
            f"{metric} is {readable_number(value)} in {where}, below the minimum "
            f"{readable_number(rule['min'])}.",
            evidence,
        )
    if "max" in rule and value > rule["max"]:
        return Outcome(
            RuleStatus.FAILED,
            f"{metric} is {readable_number(value)} in {where}, above the maximum "
            f"{readable_number(rule['max'])}.",
            evidence,
        )
    bound = " and ".join(
        text
        for key, text in (
            ("min", f"at least {readable_number(rule.get('min', 0))}"),
            ("max", f"at most {readable_number(rule.get('max', 0))}"),
        )
        if key in rule
    )
    return Outcome(
        RuleStatus.PASSED,
        f"{metric} is {readable_number(value)} in {where}, {bound} as required.",
        evidence,
    )


# --- licence ---------------------------------------------------------------------


@functools.cache
def _licensing() -> license_expression.Licensing:
    return license_expression.get_spdx_licensing()


def licence_alternatives(expression: str) -> list[frozenset[str]]:
    """The identifier sets a licensee may choose between (disjunctive normal form).

    ``A OR (B AND C)`` gives ``[{A}, {B, C}]``; a ``WITH`` exception counts as
    its licence. Expressions are those ``registry.licences`` stored.
    """
    licensing = _licensing()

    def walk(node) -> list[frozenset[str]]:
        if isinstance(node, licensing.OR):
            return [alt for arg in node.args for alt in walk(arg)]
        if isinstance(node, licensing.AND):
            combos = [frozenset()]
            for arg in node.args:
                combos = [c | alt for c in combos for alt in walk(arg)]
            return combos
        symbol = getattr(node, "license_symbol", node)
        return [frozenset({_REF_PREFIX.sub("LicenseRef-", symbol.key)})]

    return walk(licensing.parse(expression, validate=False))


def _licence_subjects(rule: dict[str, Any], facts: Facts) -> list[tuple[str, Any]]:
    """(label, Licence) of everything the allow/deny lists apply to."""
    targets = rule.get("applies_to", ["model"])
    subjects = []
    if "model" in targets:
        subjects.append((f"Model version {facts.version}", facts.version.licence))
    if "base_models" in targets:
        subjects += [(f"Base version {a}", a.licence) for a in facts.ancestors]
    if "training_data" in targets:
        seen = set()
        for link in facts.learning_links:
            if link.dataset_version_id not in seen:
                seen.add(link.dataset_version_id)
                noun = _ROLE_NOUN[link.role].capitalize()
                subjects.append(
                    (f"{noun} {link.dataset_version}", link.dataset_version.licence)
                )
    return subjects


def _licence(rule: dict[str, Any], facts: Facts) -> Outcome:
    subjects = _licence_subjects(rule, facts)
    violations: list[str] = []
    evidence: dict[str, Any] = {
        "licences": {label: licence.expression for label, licence in subjects}
    }
    checks: list[str] = []
    if "allow" in rule:
        allowed = frozenset(rule["allow"])
        evidence["allow"] = rule["allow"]
        for label, licence in subjects:
            if not any(
                alt <= allowed for alt in licence_alternatives(licence.expression)
            ):
                violations.append(
                    f"{label} is licensed {licence.expression}, which cannot be "
                    f"used under the allowed licences ({_list(rule['allow'])}) alone."
                )
        if subjects:
            checks.append(f"{len(subjects)} licence(s) within the allow-list")
    if "deny" in rule:
        denied = frozenset(rule["deny"])
        evidence["deny"] = rule["deny"]
        for label, licence in subjects:
            if all(alt & denied for alt in licence_alternatives(licence.expression)):
                violations.append(
                    f"{label} is licensed {licence.expression}, which cannot be "
                    f"used without a denied licence ({_list(rule['deny'])})."
                )
        if subjects:
            checks.append(f"{len(subjects)} licence(s) clear of the deny-list")
    if rule.get("require_lineage_compatibility"):
        has_lineage = bool(facts.ancestors or facts.learning_links)
        warnings = []
        for version in (facts.version, *facts.ancestors):
            warnings += lineage.licence_warnings(version)
        evidence["lineage_warnings"] = warnings
        violations += [w["message"] for w in warnings]
        if has_lineage:
            checks.append(
                f"licences compatible along the lineage ({len(facts.ancestors)} "
                f"base version(s), {len(facts.learning_datasets)} training "
                "dataset(s))"
            )
    if not checks and not violations:
        return _verdict(
            violations,
            evidence,
            "There is nothing to check: no base version, no training data and "
            "no licence in the rule's scope is recorded.",
            applicable=False,
        )
    return _verdict(violations, evidence, f"Licences pass: {_list(checks)}.")


# --- sovereignty -----------------------------------------------------------------


def jurisdiction_allowed(code: str, allowed: Iterable[str]) -> bool:
    """Whether a recorded jurisdiction is within an allow-list.

    ``FR`` admits ``FR`` and its subdivisions (``FR-IDF``); a subdivision such
    as ``ES-CT`` admits only itself; ``EU`` and ``EEA`` admit their member
    states and their subdivisions, and the literal code.
    """
    country = code.split("-")[0]
    for entry in allowed:
        if code == entry:
            return True
        if entry in JURISDICTION_GROUPS and country in JURISDICTION_GROUPS[entry]:
            return True
        if "-" not in entry and country == entry:
            return True
    return False


def _check_data_origins(
    rule: dict[str, Any],
    facts: Facts,
    violations: list[str],
    evidence: dict[str, Any],
    checked: list[str],
) -> None:
    """The ``data_origin_jurisdictions`` part of a sovereignty rule, in place."""
    version = facts.version
    allowed = rule["data_origin_jurisdictions"]
    evidence["data_origin_jurisdictions"] = allowed
    evidence["data_origins"] = [
        {"dataset_version": d.pk, "label": str(d), "origin": d.origin_jurisdiction}
        for d in facts.learning_datasets
    ]
    if not facts.learning_datasets:
        violations.append(
            f"No training or fine-tuning data is recorded for {version} or its "
            "base versions, so where its data came from cannot be shown."
        )
    for dataset in facts.learning_datasets:
        if not jurisdiction_allowed(dataset.origin_jurisdiction, allowed):
            violations.append(
                f"Training data {dataset} comes from "
                f"{dataset.origin_jurisdiction}, outside the allowed "
                f"{_list(allowed)}."
            )
    if facts.learning_datasets:
        checked.append(f"data from {len(facts.learning_datasets)} dataset(s)")


def _sovereignty(rule: dict[str, Any], facts: Facts) -> Outcome:
    version = facts.version
    violations: list[str] = []
    evidence: dict[str, Any] = {}
    checked: list[str] = []
    for key, attribute, verb in (
        ("training_jurisdictions", "training_jurisdiction", "was trained"),
        ("hosting_jurisdictions", "hosting_jurisdiction", "is hosted"),
    ):
        if key not in rule:
            continue
        code = getattr(version, attribute)
        evidence[attribute] = code or None
        evidence[key] = rule[key]
        noun = attribute.split("_")[0]
        if not code:
            violations.append(f"Where {version} {verb} is not recorded.")
        elif not jurisdiction_allowed(code, rule[key]):
            violations.append(
                f"{version} {verb} in {code}, outside the allowed {_list(rule[key])}."
            )
        else:
            checked.append(f"{noun} in {code}")
    if "data_origin_jurisdictions" in rule:
        _check_data_origins(rule, facts, violations, evidence, checked)
    base_only = not set(rule) & {
        "training_jurisdictions",
        "hosting_jurisdictions",
        "data_origin_jurisdictions",
    }
    if "base_model_jurisdictions" in rule:
        allowed = rule["base_model_jurisdictions"]
        evidence["base_model_jurisdictions"] = allowed
        evidence["base_models"] = [
            {
                "model_version": a.pk,
                "label": str(a),
                "training_jurisdiction": a.training_jurisdiction or None,
            }
            for a in facts.ancestors
        ]
        for ancestor in facts.ancestors:
            code = ancestor.training_jurisdiction
            if not code:
                violations.append(
                    f"Where base version {ancestor} was trained is not recorded."
                )
            elif not jurisdiction_allowed(code, allowed):
                violations.append(
                    f"Base version {ancestor} was trained in {code}, outside the "
                    f"allowed {_list(allowed)}."
                )
        if facts.ancestors:
            checked.append(f"{len(facts.ancestors)} base version(s)")
        elif base_only:
            return _verdict(
                violations,
                evidence,
                f"{version} has no base version, so the origin of a base model "
                "does not arise.",
                applicable=False,
            )
    return _verdict(
        violations, evidence, f"Within the allowed jurisdictions: {_list(checked)}."
    )


# --- personal_data ---------------------------------------------------------------


def _kind_of_data(dataset: DatasetVersion) -> str:
    return dataset.get_personal_data_display().lower()


def _personal_data(rule: dict[str, Any], facts: Facts) -> Outcome:
    mode, version = rule["mode"], facts.version
    datasets = facts.learning_datasets
    evidence: dict[str, Any] = {
        "mode": mode,
        "datasets": [
            {
                "dataset_version": d.pk,
                "label": str(d),
                "personal_data": d.personal_data,
                "has_legal_basis": bool(d.legal_basis.strip()),
            }
            for d in datasets
        ],
    }
    if not datasets:
        return _verdict(
            [
                f"No training or fine-tuning data is recorded for {version} or its "
                "base versions, so what personal data it learned from cannot be "
                "shown."
            ],
            evidence,
            "",
        )
    personal = [d for d in datasets if d.personal_data in PERSONAL]
    if mode == "forbidden":
        violations = [
            f"Training data {d} holds personal data ({_kind_of_data(d)}); the "
            "policy forbids personal data."
            for d in personal
        ]
        return _verdict(
            violations,
            evidence,
            f"None of the {len(datasets)} training dataset(s) holds personal data.",
        )
    if not personal:
        return _verdict(
            [],
            evidence,
            f"None of the {len(datasets)} training dataset(s) holds personal data, "
            "so no legal basis is needed.",
            applicable=False,
        )
    violations = [
        f"Training data {d} holds personal data ({_kind_of_data(d)}) but records "
        "no legal basis."
        for d in personal
        if not d.legal_basis.strip()
    ]
    return _verdict(
        violations,
        evidence,
        f"Each of the {len(personal)} training dataset(s) with personal data "
        "records a legal basis.",
    )


# --- documentation ---------------------------------------------------------------


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | dict | tuple):
        return not value
    return False


def _documentation(rule: dict[str, Any], facts: Facts) -> Outcome:
    version, use_case = facts.version, facts.use_case
    missing: list[dict[str, Any]] = []
    checked: list[str] = []
    applicable = False
    if "model_card" in rule:
        applicable = True
        gaps = [
            name
            for name in rule["model_card"]
            if _is_empty(
                getattr(version.model if name in _MODEL_FIELDS else version, name)
            )
        ]
        missing += [{"object": "model card", "field": name} for name in gaps]
        checked.append(f"{len(rule['model_card'])} model-card field(s)")
    if "datasheet" in rule and facts.own_datasets:
        applicable = True
        for dataset in facts.own_datasets:
            missing += [
                {"object": f"datasheet of {dataset}", "field": name}
                for name in rule["datasheet"]
                if _is_empty(getattr(dataset, name))
            ]
        checked.append(
            f"{len(rule['datasheet'])} datasheet field(s) on "
            f"{len(facts.own_datasets)} dataset(s)"
        )
    if "use_case" in rule:
        applicable = True
        missing += [
            {"object": "use case", "field": name}
            for name in rule["use_case"]
            if _is_empty(getattr(use_case, name))
        ]
        checked.append(f"{len(rule['use_case'])} use-case field(s)")
    evidence: dict[str, Any] = {"missing": missing}
    if not applicable:
        return _verdict(
            [],
            evidence,
            f"{version} has no linked dataset, so no datasheet is required.",
            applicable=False,
        )
    by_object: dict[str, list[str]] = {}
    for gap in missing:
        by_object.setdefault(gap["object"], []).append(gap["field"])
    violations = (
        [
            "Empty: "
            + "; ".join(f"{obj}: {_list(names)}" for obj, names in by_object.items())
            + "."
        ]
        if missing
        else []
    )
    return _verdict(violations, evidence, f"Filled in: {_list(checked)}.")


# --- size_cost -------------------------------------------------------------------


def run_energy_per_1k_tokens(run: EvaluationRun) -> tuple[float | None, list[str]]:
    """Energy per thousand tokens over a run's tasks, and how it was measured.

    The run's ``results`` carry each task's ``performance`` (``energy_j``,
    ``tokens``, ``energy_method``); the figure is the total energy over the
    total tokens of the tasks that counted tokens, so a short task does not
    weigh as much as a long one. None when no task counted tokens.
    """
    joules = tokens = 0.0
    methods: list[str] = []
    for result in run.results or []:
        performance = result.get("performance") or {}
        energy, count = performance.get("energy_j"), performance.get("tokens")
        if isinstance(energy, int | float) and isinstance(count, int | float) and count:
            joules += energy
            tokens += count
            method = performance.get("energy_method")
            if method and method not in methods:
                methods.append(method)
    if not tokens:
        return None, methods
    return joules / tokens * 1000, methods


def _size_cost(rule: dict[str, Any], facts: Facts) -> Outcome:
    version = facts.version
    violations: list[str] = []
    evidence: dict[str, Any] = {}
    checked: list[str] = []
    if "max_parameters" in rule:
        limit, count = rule["max_parameters"], version.parameter_count
        evidence.update(parameter_count=count, max_parameters=limit)
        if count is None:
            violations.append(
                f"The parameter count of {version} is not known: its graph has not "
                "been inspected."
            )
        elif count > limit:
            violations.append(
                f"{version} has {count:,} parameters, above the maximum {limit:,}."
            )
        else:
            checked.append(f"{count:,} parameters (at most {limit:,})")
    if "max_energy_j_per_1k_tokens" in rule:
        limit = rule["max_energy_j_per_1k_tokens"]
        reference = rule.get("suite")
        evidence.update(max_energy_j_per_1k_tokens=limit, suite=reference)
        run = facts.latest_run(reference) if version.artifact_digest else None
        what = f"suite {reference}" if reference else "any suite"
        if run is None:
            violations.append(
                f"No successful run of {what} on artifact "
                f"{_short(version.artifact_digest)} exists, so its energy use is "
                "unknown."
            )
        else:
            energy, methods = run_energy_per_1k_tokens(run)
            evidence.update(
                run_id=run.pk, energy_j_per_1k_tokens=energy, energy_methods=methods
            )
            if energy is None:
                violations.append(
                    f"Run {run.pk} counted no tokens, so its energy per thousand "
                    "tokens is unknown."
                )
            elif energy > limit:
                violations.append(
                    f"Run {run.pk} used {readable_number(energy)} J per 1,000 tokens "
                    f"({_list(methods)}), above the maximum {readable_number(limit)}."
                )
            else:
                checked.append(
                    f"{readable_number(energy)} J per 1,000 tokens in run {run.pk} "
                    f"({_list(methods)}; at most {readable_number(limit)})"
                )
    return _verdict(violations, evidence, f"Within bounds: {'; '.join(checked)}.")


# --- the engine ------------------------------------------------------------------

EVALUATORS: dict[str, Callable[[dict[str, Any], Facts], Outcome]] = {
    "required_evaluation": _required_evaluation,
    "licence": _licence,
    "sovereignty": _sovereignty,
    "personal_data": _personal_data,
    "documentation": _documentation,
    "size_cost": _size_cost,
    "required_suite": required_suite,
    "substantial_modification": substantial_modification,
    "quantisation": quantisation_rule,
}


def evaluate_rule(rule: dict[str, Any], facts: Facts) -> Outcome:
    """Evaluate one rule; an unexpected error fails it rather than passing it."""
    try:
        return EVALUATORS[rule["kind"]](rule, facts)
    except Exception as exc:
        logger.exception("policy_rule_error", extra={"rule": rule.get("id")})
        return Outcome(
            RuleStatus.FAILED,
            f"The rule could not be evaluated ({type(exc).__name__}); it fails "
            "until it can.",
            {"error": type(exc).__name__},
        )


def evaluate(
    *, use_case: UseCase, policies: Iterable[Policy], now: datetime | None = None
) -> list[dict[str, Any]]:
    """One outcome per rule of every policy, in policy then rule order.

    Each outcome is ``{policy, policy_id, policy_version, rule_id, kind,
    status, evidence, message}`` in plain JSON types. Reads only.
    """
    facts = Facts(use_case, now=now)
    outcomes = []
    for policy in policies:
        for rule in policy.rules:
            outcome = evaluate_rule(rule, facts)
            outcomes.append(
                {
                    "policy": policy.name,
                    "policy_id": policy.pk,
                    "policy_version": policy.version,
                    "rule_id": rule["id"],
                    "kind": rule["kind"],
                    "status": str(outcome.status),
                    "evidence": outcome.evidence,
                    "message": outcome.message,
                }
            )
    return outcomes
