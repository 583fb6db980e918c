"""Citizens' incident reports: filing one on a register entry, and its triage.

Both services record one audit event linked to the model version the report
is about (``object_type`` ``registry.modelversion``), so the version's audit
export carries its reports. The event holds a SHA-256 of the text, never the
text or the contact address: the chain is exported to agencies, the contact
is for oversight reviewers only.
"""

from __future__ import annotations

import hashlib
from datetime import date

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from config.exceptions import DomainError, InvalidTransition, PolicyViolation
from governance.models import IncidentReport, IncidentStatus, UseCase
from governance.register import register_use_cases
from governance.services.decisions import use_case_suspend
from registry.models import Role
from registry.selectors import user_role

WHAT_HAPPENED_MIN_LENGTH = 20
WHAT_HAPPENED_MAX_LENGTH = 5_000
TRIAGE_NOTE_MIN_LENGTH = 10
TRIAGE_NOTE_MAX_LENGTH = 5_000
# Where a triage may lead from each status.
TRIAGE_TRANSITIONS = {
    IncidentStatus.NEW: frozenset(
        {IncidentStatus.TRIAGED, IncidentStatus.DISMISSED, IncidentStatus.ACTIONED}
    ),
    IncidentStatus.TRIAGED: frozenset(
        {IncidentStatus.DISMISSED, IncidentStatus.ACTIONED}
    ),
}


def _field_error(field: str, message: str, code: str = "invalid") -> DomainError:
    return DomainError(
        message, code=code, fields={field: [{"code": code, "message": message}]}
    )


def _text(value: str, *, field: str, minimum: int, maximum: int) -> str:
    value = (value or "").strip()
    if len(value) < minimum:
        raise _field_error(
            field, f"Write at least {minimum} characters.", code="too_short"
        )
    if len(value) > maximum:
        raise _field_error(
            field, f"Write at most {maximum} characters.", code="too_long"
        )
    return value


def _version_event(report: IncidentReport, *, actor, action: str, payload: dict):
    audit.record(
        actor=actor,
        action=action,
        object_type=audit.MODEL_VERSION_TYPE,
        object_id=str(report.model_version_id),
        agency=report.use_case.agency,
        payload={
            "incident_report_id": report.pk,
            "use_case_id": report.use_case_id,
            "model_version_id": report.model_version_id,
            **payload,
        },
    )


@transaction.atomic
def incident_report_file(
    *,
    use_case: UseCase,
    what_happened: str,
    occurred_on: date,
    contact_email: str = "",
) -> IncidentReport:
    """File a member of the public's incident report on a register entry.

    No actor: the public files without an account (the event's actor is the
    platform). Only a use case the register lists (approved, suspended,
    retired, with a public model) takes reports; ``DomainError`` otherwise,
    for a date in the future, and for a text shorter than
    ``WHAT_HAPPENED_MIN_LENGTH`` or longer than ``WHAT_HAPPENED_MAX_LENGTH``.
    Records ``incident_report.filed`` on the use case's model version.
    """
    listed = (
        register_use_cases()
        .select_for_update(of=("self",))
        .filter(pk=use_case.pk)
        .first()
    )
    if listed is None:
        raise DomainError(
            "Only entries of the public register take incident reports.",
            code="not_in_register",
        )
    text = _text(
        what_happened,
        field="what_happened",
        minimum=WHAT_HAPPENED_MIN_LENGTH,
        maximum=WHAT_HAPPENED_MAX_LENGTH,
    )
    if occurred_on > timezone.localdate():
        raise _field_error("occurred_on", "The date cannot be in the future.")
    report = IncidentReport.objects.create(
        use_case=listed,
        model_version_id=listed.model_version_id,
        what_happened=text,
        occurred_on=occurred_on,
        contact_email=(contact_email or "").strip(),
    )
    _version_event(
        report,
        actor=None,
        action="incident_report.filed",
        payload={
            "use_case_status": listed.status,
            "occurred_on": occurred_on,
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "text_length": len(text),
            "has_contact": bool(report.contact_email),
            "source": "public register",
        },
    )
    return report


@transaction.atomic
def incident_report_triage(
    *,
    actor,
    report: IncidentReport,
    status: str,
    note: str,
    suspend: bool = False,
) -> IncidentReport:
    """An oversight reviewer's triage of a report: triaged, dismissed or actioned.

    Only reviewers triage (``PolicyViolation``). From ``new`` to any of the
    three; from ``triaged`` to dismissed or actioned; never again once
    dismissed or actioned (``InvalidTransition``). ``note`` (at least
    ``TRIAGE_NOTE_MIN_LENGTH`` characters) says why. ``suspend`` (only with
    ``actioned``) suspends the use case through
    ``decisions.use_case_suspend`` with the note as rationale, in the same
    transaction, so its rules and its own audit event apply and the report
    names the decision. Records ``incident_report.triaged``.
    """
    if user_role(actor) != Role.REVIEWER:
        raise PolicyViolation(
            "Only oversight reviewers triage incident reports.",
            code="permission_denied",
        )
    locked = (
        IncidentReport.objects.select_for_update(of=("self",))
        .select_related("use_case__agency")
        .get(pk=report.pk)
    )
    allowed = TRIAGE_TRANSITIONS.get(locked.status, frozenset())
    if status not in allowed:
        raise InvalidTransition(
            f"A report that is {locked.status} cannot become {status}.",
            code="invalid_transition",
        )
    note = _text(
        note,
        field="note",
        minimum=TRIAGE_NOTE_MIN_LENGTH,
        maximum=TRIAGE_NOTE_MAX_LENGTH,
    )
    if suspend and status != IncidentStatus.ACTIONED:
        raise _field_error(
            "suspend", "Suspending the use case is an action: choose 'actioned'."
        )
    decision = None
    if suspend:
        decision = use_case_suspend(
            actor=actor,
            use_case=locked.use_case,
            rationale=f"Incident report {locked.pk}: {note}",
        )
    previous = locked.status
    locked.status = status
    locked.triage_note = note
    locked.triaged_by = actor
    locked.triaged_at = timezone.now()
    locked.decision = decision or locked.decision
    locked.save(
        update_fields=[
            "status",
            "triage_note",
            "triaged_by",
            "triaged_at",
            "decision",
            "updated_at",
        ]
    )
    _version_event(
        locked,
        actor=actor,
        action="incident_report.triaged",
        payload={
            "from": previous,
            "to": status,
            "note": note,
            "suspension_decision_id": decision.pk if decision else None,
        },
    )
    return locked
