"""Governed writes of policies and policy results (the policy engine's verdicts).

Who may write: oversight reviewers and platform administrators write
policies; the policy engine runs for the owning agency, for oversight, and
for the platform itself (``actor=None``, after an evaluation).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.db import IntegrityError, transaction

from audit import services as audit
from audit.verify import canonical_json
from config.exceptions import Conflict, DomainError
from governance.models import (
    Policy,
    PolicyResult,
    PolicyScope,
    PolicyTrigger,
    RuleStatus,
    UseCase,
    UseCaseStatus,
)
from governance.rules.checks import evaluate
from governance.rules.schema import validate_rules
from governance.services.use_cases import (
    _clean,
    _denied,
    _field_error,
    use_case_recheck_enqueue,
)
from registry.models import Agency, ModelVersion
from registry.selectors import (
    is_oversight,
    user_agency_id,
)
from registry.services.changes import UNSET

logger = logging.getLogger(__name__)

# --- policies ------------------------------------------------------------------


def _require_policy_writer(actor) -> None:
    if not is_oversight(actor):
        raise _denied(
            "Only oversight reviewers and platform administrators write policies."
        )


def _check_scope(scope: str, agency: Agency | None, risk_tier: str) -> None:
    """The scope names exactly its target: an agency, a tier, or neither."""
    problems: dict[str, list[dict[str, str]]] = {}
    if scope == PolicyScope.AGENCY and agency is None:
        problems.update(_field_error("agency", "A policy of scope 'agency' names one."))
    if scope != PolicyScope.AGENCY and agency is not None:
        problems.update(_field_error("agency", f"Scope '{scope}' takes no agency."))
    if scope == PolicyScope.RISK_TIER and not risk_tier:
        problems.update(
            _field_error("risk_tier", "A policy of scope 'risk_tier' names a tier.")
        )
    if scope != PolicyScope.RISK_TIER and risk_tier:
        problems.update(_field_error("risk_tier", f"Scope '{scope}' takes no tier."))
    if problems:
        raise DomainError(
            "The scope and its target do not agree.",
            code="validation_error",
            fields=problems,
        )


def rules_digest(rules: Any) -> str:
    """SHA-256 of the canonical JSON of a policy's rules, as the audit records it."""
    return hashlib.sha256(canonical_json(rules)).hexdigest()


def _policy_payload(policy: Policy, **extra: Any) -> dict[str, Any]:
    return {
        "policy_id": policy.pk,
        "name": policy.name,
        "version": policy.version,
        "scope": policy.scope,
        "agency": policy.agency.slug if policy.agency else None,
        "risk_tier": policy.risk_tier,
        "is_active": policy.is_active,
        "rules_sha256": rules_digest(policy.rules),
        **extra,
    }


def _save_version(policy: Policy) -> None:
    try:
        with transaction.atomic():
            policy.save()
    except IntegrityError as exc:
        message = f"Policy {policy.name} version {policy.version} already exists."
        raise Conflict(message, code="policy_exists") from exc


@transaction.atomic
def policy_create(
    *,
    actor,
    name: str,
    title: str,
    scope: str,
    rules: list[dict[str, Any]],
    description: str = "",
    agency: Agency | None = None,
    risk_tier: str = "",
    is_active: bool = True,
) -> Policy:
    """Write version 1 of a new policy.

    Oversight reviewers and platform administrators (``PolicyViolation``
    otherwise). ``rules`` must pass ``validate_rules`` (400 with
    JSON paths); the scope must name its target (400); a name already used
    raises ``Conflict`` (409 ``policy_exists``): revise it instead.
    """
    _require_policy_writer(actor)
    _check_scope(scope, agency, risk_tier)
    validate_rules(rules)
    if Policy.objects.filter(name=name).exists():
        message = f"A policy named {name} exists; write a new version of it instead."
        raise Conflict(
            message,
            code="policy_exists",
            fields=_field_error("name", message, "unique"),
        )
    policy = Policy(
        name=name,
        version=1,
        title=title,
        description=description,
        scope=scope,
        agency=agency,
        risk_tier=risk_tier,
        rules=rules,
        is_active=is_active,
        created_by=actor,
    )
    _clean(policy)
    _save_version(policy)
    audit.record(
        actor=actor,
        action="policy.created",
        obj=policy,
        agency=agency,
        payload=_policy_payload(policy),
    )
    return policy


@transaction.atomic
def policy_revise(
    *,
    actor,
    policy: Policy,
    title: str = UNSET,
    description: str = UNSET,
    scope: str = UNSET,
    agency: Agency | None = UNSET,
    risk_tier: str = UNSET,
    rules: list[dict[str, Any]] = UNSET,
    is_active: bool = UNSET,
) -> Policy:
    """Write the next version of a policy; the versions before stay as they were.

    ``UNSET`` fields are copied from ``policy``, which must be the latest
    version (``Conflict`` 409 ``policy_outdated`` otherwise, checked under a
    lock on it). Deactivating is a new version with ``is_active=False``.
    Same callers and validation as ``policy_create``; a version identical to
    the last raises ``DomainError`` (400 ``no_change``).
    """
    _require_policy_writer(actor)
    latest = (
        Policy.objects.select_for_update()
        .filter(name=policy.name)
        .order_by("-version")
        .first()
    )
    if latest is None or latest.pk != policy.pk:
        raise Conflict(
            f"Policy {policy.name} is at version {latest.version if latest else '?'}; "
            f"revise the latest version, not version {policy.version}.",
            code="policy_outdated",
        )
    values = {
        "title": title,
        "description": description,
        "scope": scope,
        "agency": agency,
        "risk_tier": risk_tier,
        "rules": rules,
        "is_active": is_active,
    }
    merged = {
        key: getattr(latest, key) if value is UNSET else value
        for key, value in values.items()
    }
    if scope is not UNSET and scope != latest.scope:
        # A new scope drops the old target unless a new one is given.
        if agency is UNSET and scope != PolicyScope.AGENCY:
            merged["agency"] = None
        if risk_tier is UNSET and scope != PolicyScope.RISK_TIER:
            merged["risk_tier"] = ""
    changed = [key for key, value in merged.items() if value != getattr(latest, key)]
    if not changed:
        raise DomainError(
            "The new version would be identical to the latest one.", code="no_change"
        )
    _check_scope(merged["scope"], merged["agency"], merged["risk_tier"])
    if "rules" in changed:
        validate_rules(merged["rules"])
    revised = Policy(
        name=latest.name, version=latest.version + 1, created_by=actor, **merged
    )
    _clean(revised)
    _save_version(revised)
    audit.record(
        actor=actor,
        action="policy.revised",
        obj=revised,
        agency=revised.agency,
        payload=_policy_payload(
            revised, previous_version=latest.version, changed=sorted(changed)
        ),
    )
    return revised


# --- the policy engine ---------------------------------------------------------


@transaction.atomic
def policy_evaluate(*, use_case: UseCase, trigger: str, actor=None) -> PolicyResult:
    """Evaluate every policy in force for a use case and store the verdict.

    In force: the active latest version of each platform policy, of the use
    case's agency's policies and of its risk tier's (once assessed). Stores
    an immutable ``PolicyResult`` with one outcome per rule, snapshotting the
    model version, its artifact digest and the tier; ``passed`` is true when
    no rule failed (true as well when no policy is in force: the result then
    lists none). ``trigger`` is ``submission``, ``evaluation`` or
    ``on_demand``; ``actor`` None means the platform itself. A user actor
    must belong to the owning agency or to oversight (``PolicyViolation``).
    Raises ValueError for an unknown trigger.
    """
    if trigger not in PolicyTrigger.values:
        raise ValueError(f"unknown policy trigger {trigger!r}")
    if actor is not None and not (
        is_oversight(actor) or user_agency_id(actor) == use_case.agency_id
    ):
        raise _denied("Only the owning agency or oversight may run a policy check.")
    use_case = UseCase.objects.select_related(
        "agency", "model_version__model__agency", "model_version__licence"
    ).get(pk=use_case.pk)
    in_force = list(Policy.objects.in_force_for(use_case).order_by("name"))
    outcomes = evaluate(use_case=use_case, policies=in_force)
    passed = not any(o["status"] == RuleStatus.FAILED for o in outcomes)
    version = use_case.model_version
    result = PolicyResult.objects.create(
        use_case=use_case,
        model_version=version,
        artifact_digest=version.artifact_digest,
        risk_tier=use_case.risk_tier or "",
        trigger=trigger,
        passed=passed,
        policies=[
            {
                "id": p.pk,
                "name": p.name,
                "version": p.version,
                "title": p.title,
                "scope": p.scope,
            }
            for p in in_force
        ],
        outcomes=outcomes,
        requested_by=actor,
    )
    audit.record(
        actor=actor,
        action="policy.evaluated",
        obj=result,
        agency=use_case.agency,
        payload={
            "policy_result_id": result.pk,
            "use_case_id": use_case.pk,
            "model_version_id": version.pk,
            "artifact_sha256": version.artifact_digest,
            "trigger": trigger,
            "passed": passed,
            "policies": [f"{p.name}@{p.version}" for p in in_force],
            "failed": [f"{name}/{rule}" for name, rule in result.failed_rules()],
        },
    )
    return result


@transaction.atomic
def policy_evaluate_for_version(
    *, model_version: ModelVersion, trigger: str, actor=None
) -> list[PolicyResult]:
    """Run ``policy_evaluate`` for every use case of a version that is not retired.

    Called after every successful evaluation, inside the transaction that
    records it. Each use case is checked in its own savepoint: an engine
    error on one is logged and skipped rather than undoing the evaluation,
    and a check can always be run again on demand.
    """
    results = []
    use_cases = UseCase.objects.filter(model_version_id=model_version.pk).exclude(
        status=UseCaseStatus.RETIRED
    )
    for use_case in use_cases.order_by("pk"):
        try:
            result = policy_evaluate(use_case=use_case, trigger=trigger, actor=actor)
        except Exception:
            logger.exception(
                "policy_evaluate_failed",
                extra={"use_case_id": use_case.pk, "trigger": trigger},
            )
            continue
        results.append(result)
        if trigger == PolicyTrigger.EVALUATION:
            # A regression sends an approved use case back to review. The
            # re-check runs after this transaction commits: here the audit
            # chain head is held, and a decision takes the use-case row lock
            # first, so taking it here could deadlock.
            use_case_recheck_enqueue(result=result)
    return results
