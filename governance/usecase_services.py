"""Governed writes of use cases, risk assessments, policies and policy results.

Each service is keyword-only, takes the acting user, checks who may act,
raises ``config.exceptions`` errors, writes, and records one audit event.
Lifecycle transitions of use cases (submit, review, decide) live in their
own module and call ``policy_evaluate`` on submission.

Who may write:

- a use case belongs to the agency of the member or maintainer who created
  it; that agency's members and maintainers (and platform administrators)
  edit and assess it while it is ``draft`` or ``changes_requested``;
- oversight reviewers and platform administrators write policies;
- the policy engine runs for the owning agency, for oversight, and for the
  platform itself (``actor=None``, after an evaluation).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import date
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from audit.verify import canonical_json
from config.exceptions import Conflict, DomainError, PolicyViolation
from governance import policies, risk
from governance.models import (
    Policy,
    PolicyResult,
    PolicyScope,
    PolicyTrigger,
    Questionnaire,
    RuleStatus,
    UseCase,
    UseCaseStatus,
)
from registry.models import (
    Agency,
    ModelVersion,
    Role,
    is_oversight,
    is_platform_admin,
    user_agency_id,
    user_membership,
    user_role,
)
from registry.services.changes import UNSET

logger = logging.getLogger(__name__)

WRITER_ROLES = frozenset({Role.MEMBER, Role.MAINTAINER})
USE_CASE_FIELDS = (
    "title",
    "purpose",
    "public_service",
    "affected_people",
    "decision_informed",
    "human_oversight",
)


def _field_error(field: str, message: str, code: str = "invalid") -> dict:
    return {field: [{"code": code, "message": message}]}


def _denied(message: str) -> PolicyViolation:
    return PolicyViolation(message, code="permission_denied")


def _clean(obj: Any) -> None:
    """Run field validators (lengths, blanks, choices); raise ``DomainError``."""
    relations = [f.name for f in obj._meta.concrete_fields if f.is_relation]
    try:
        obj.full_clean(
            exclude=relations, validate_unique=False, validate_constraints=False
        )
    except ValidationError as exc:
        raise DomainError(
            "The request has invalid fields.",
            code="validation_error",
            fields={
                name: [
                    {"code": e.code or "invalid", "message": m} for e in errs for m in e
                ]
                for name, errs in exc.error_dict.items()
            },
        ) from exc


def _jsonable(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "pk"):
        return value.pk
    return value


# --- use cases -----------------------------------------------------------------


def _require_editor(actor, use_case: UseCase) -> None:
    """The owning agency's members and maintainers, or a platform administrator."""
    if is_platform_admin(actor):
        return
    if (
        user_agency_id(actor) != use_case.agency_id
        or user_role(actor) not in WRITER_ROLES
    ):
        raise _denied("Only the owning agency's members and maintainers may do this.")


def _check_valid_until(valid_until: date) -> None:
    if valid_until <= timezone.localdate():
        message = "The end of validity must be a date after today."
        raise DomainError(
            message,
            code="validation_error",
            fields=_field_error("valid_until", message),
        )


def _check_version_visible(actor, model_version: ModelVersion) -> None:
    # Another agency's private version is answered as absent (SECURITY C3).
    if not ModelVersion.objects.visible_to(actor).filter(pk=model_version.pk).exists():
        message = f"Model version {model_version.pk} does not exist."
        raise DomainError(
            message,
            code="validation_error",
            fields=_field_error("model_version", message, "does_not_exist"),
        )


def _lock_editable(use_case: UseCase) -> UseCase:
    """Lock the row and refuse unless its content may still change (409)."""
    locked = UseCase.objects.select_for_update().get(pk=use_case.pk)
    if not locked.is_editable:
        raise Conflict(
            f"The use case is {locked.get_status_display().lower()}; its content "
            "can change only while a draft or when changes are requested.",
            code="usecase_frozen",
        )
    return locked


@transaction.atomic
def use_case_create(
    *,
    actor,
    model_version: ModelVersion,
    title: str,
    purpose: str,
    public_service: str,
    valid_until: date,
    affected_people: str = "",
    decision_informed: str = "",
    human_oversight: str = "",
    agency: Agency | None = None,
) -> UseCase:
    """Write a draft use case of a model version for the actor's agency.

    Members and maintainers create it for their own agency; a platform
    administrator names the ``agency``. The version must be visible to the
    actor (its own agency's, or public); ``valid_until`` must be after today.
    Raises ``PolicyViolation`` (403) for other callers and ``DomainError``
    (400) naming the invalid field.
    """
    if is_platform_admin(actor):
        if agency is None:
            message = "A platform administrator names the agency of the use case."
            raise DomainError(
                message, code="validation_error", fields=_field_error("agency", message)
            )
    else:
        membership = user_membership(actor)
        if membership is None or membership.role not in WRITER_ROLES:
            raise _denied("Only members and maintainers of an agency write use cases.")
        if agency is not None and agency.pk != membership.agency_id:
            raise _denied("A use case belongs to the agency of the person writing it.")
        agency = membership.agency
    _check_version_visible(actor, model_version)
    _check_valid_until(valid_until)
    use_case = UseCase(
        agency=agency,
        model_version=model_version,
        title=title,
        purpose=purpose,
        public_service=public_service,
        affected_people=affected_people,
        decision_informed=decision_informed,
        human_oversight=human_oversight,
        valid_until=valid_until,
        created_by=actor,
    )
    _clean(use_case)
    use_case.save()
    audit.record(
        actor=actor,
        action="use_case.created",
        obj=use_case,
        agency=agency,
        payload={
            "use_case_id": use_case.pk,
            "model_version_id": model_version.pk,
            "title": title,
            "valid_until": valid_until,
        },
    )
    return use_case


@transaction.atomic
def use_case_update(
    *,
    actor,
    use_case: UseCase,
    model_version: ModelVersion = UNSET,
    title: str = UNSET,
    purpose: str = UNSET,
    public_service: str = UNSET,
    affected_people: str = UNSET,
    decision_informed: str = UNSET,
    human_oversight: str = UNSET,
    valid_until: date = UNSET,
) -> UseCase:
    """Change what a draft use case says; ``UNSET`` fields stay as they are.

    The owning agency's members and maintainers, or a platform administrator
    (``PolicyViolation`` otherwise). Only while ``draft`` or
    ``changes_requested`` (``Conflict`` 409 ``usecase_frozen`` otherwise,
    checked under a row lock so a concurrent submission cannot slip between).
    An assessment already made stays: the reviewer sees both.
    """
    _require_editor(actor, use_case)
    locked = _lock_editable(use_case)
    if model_version is not UNSET:
        _check_version_visible(actor, model_version)
    if valid_until is not UNSET:
        _check_valid_until(valid_until)
    changes: dict[str, dict[str, Any]] = {}
    for name, value in (
        ("model_version", model_version),
        ("title", title),
        ("purpose", purpose),
        ("public_service", public_service),
        ("affected_people", affected_people),
        ("decision_informed", decision_informed),
        ("human_oversight", human_oversight),
        ("valid_until", valid_until),
    ):
        if value is UNSET:
            continue
        current = getattr(locked, name)
        if current != value:
            changes[name] = {"from": _jsonable(current), "to": _jsonable(value)}
            setattr(locked, name, value)
    if not changes:
        return locked
    _clean(locked)
    locked.save()
    audit.record(
        actor=actor,
        action="use_case.updated",
        obj=locked,
        agency=locked.agency,
        payload={"use_case_id": locked.pk, "changes": changes},
    )
    return locked


def questionnaire_get(reference: str | None = None) -> Questionnaire:
    """The questionnaire ``name@version``, or the latest version of ``name``.

    Without a reference, the latest ``aia``. Raises ``DomainError`` (400,
    field ``questionnaire``) when none matches.
    """
    name, _, version = (reference or risk.DEFAULT_QUESTIONNAIRE).partition("@")
    found = Questionnaire.objects.filter(name=name)
    if version:
        found = found.filter(version=version)
    questionnaire = found.order_by("-created_at", "-pk").first()
    if questionnaire is None:
        message = f"No questionnaire '{reference}' exists."
        raise DomainError(
            message,
            code="validation_error",
            fields=_field_error("questionnaire", message, "does_not_exist"),
        )
    return questionnaire


@transaction.atomic
def use_case_assess(
    *,
    actor,
    use_case: UseCase,
    answers: dict[str, Any],
    questionnaire: Questionnaire | None = None,
) -> UseCase:
    """Score answers to an impact questionnaire and set the use case's risk tier.

    Stores the score, the tier, the reasons, the questionnaire and the
    answers (normalised to lists of answer ids), as evidence for the tier.
    Same callers and states as ``use_case_update``. Raises ``DomainError``
    (400, ``invalid_answers``) naming every unknown question or answer and
    every unanswered question, ``Conflict`` (409 ``usecase_frozen``) once
    frozen.
    """
    _require_editor(actor, use_case)
    locked = _lock_editable(use_case)
    questionnaire = questionnaire or questionnaire_get()
    score, tier, reasons = risk.assess(questionnaire, answers)
    normalised = risk.validate_answers(questionnaire.definition, answers)
    locked.questionnaire = questionnaire
    locked.answers = normalised
    locked.risk_score = score
    locked.risk_tier = tier
    locked.risk_reasons = reasons
    locked.assessed_at = timezone.now()
    locked.assessed_by = actor
    locked.save()
    audit.record(
        actor=actor,
        action="use_case.assessed",
        obj=locked,
        agency=locked.agency,
        payload={
            "use_case_id": locked.pk,
            "questionnaire": str(questionnaire),
            "answers": normalised,
            "score": score,
            "tier": tier,
        },
    )
    return locked


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
    otherwise). ``rules`` must pass ``policies.validate_rules`` (400 with
    JSON paths); the scope must name its target (400); a name already used
    raises ``Conflict`` (409 ``policy_exists``): revise it instead.
    """
    _require_policy_writer(actor)
    _check_scope(scope, agency, risk_tier)
    policies.validate_rules(rules)
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
        policies.validate_rules(merged["rules"])
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
    outcomes = policies.evaluate(use_case=use_case, policies=in_force)
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
            from governance.lifecycle import use_case_recheck_enqueue

            use_case_recheck_enqueue(result=result)
    return results
