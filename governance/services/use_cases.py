"""Governed writes of use cases and their risk assessments; the recheck hook.

Each service is keyword-only, takes the acting user, checks who may act,
raises ``config.exceptions`` errors, writes, and records one audit event.
Lifecycle transitions of use cases (submit, review, decide) live in
``lifecycle``, ``decisions`` and ``approvals``; policies and their results
in ``policies``, which calls ``use_case_recheck_enqueue`` after an
evaluation-triggered check.

Who may write: a use case belongs to the agency of the member or maintainer
who created it; that agency's members and maintainers (and platform
administrators) edit and assess it while it is ``draft`` or
``changes_requested``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from config.celery import send_on_commit
from config.exceptions import Conflict, DomainError, PolicyViolation
from governance import risk
from governance.models import (
    PolicyResult,
    Questionnaire,
    UseCase,
    UseCaseStatus,
)
from registry.models import Agency, ModelVersion, Role
from registry.selectors import (
    is_platform_admin,
    user_agency_id,
    user_membership,
    user_role,
)
from registry.services.changes import UNSET
from registry.services.releases import refuse_failed_derivation

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
            fields=_field_error("valid_until", message, code="in_past"),
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
    Raises ``PolicyViolation`` (403) for other callers, ``DomainError``
    (400) naming the invalid field, and ``Conflict`` (``derivation_failed``)
    for a version whose platform derivation failed.
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
    refuse_failed_derivation(model_version, "put in a use case")
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
        refuse_failed_derivation(model_version, "put in a use case")
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


def use_case_recheck_enqueue(*, result: PolicyResult) -> bool:
    """Queue ``use_case_recheck`` for a failed result of an approved use case.

    The hook the policy engine calls after each evaluation-triggered check.
    The recheck runs after the caller commits, in a task of its own: it
    locks the use case, which must never happen while the evaluation's
    transaction holds the audit chain head (see the module docstring). True
    if queued.
    """
    if result.passed:
        return False
    approved = UseCase.objects.filter(
        pk=result.use_case_id, status=UseCaseStatus.APPROVED
    )
    if not approved.exists():
        return False
    send_on_commit("civitas.usecase_recheck", policy_result_id=result.pk)
    return True
