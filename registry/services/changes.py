"""What every catalogue write shares.

``UNSET``, field validation with the API's error shape, change sets for audit
payloads, unique-constraint races and the writer role checks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

from config.exceptions import Conflict, DomainError, PolicyViolation
from registry.models import (
    Agency,
    Role,
    is_platform_admin,
    user_agency_id,
    user_membership,
    user_role,
)


class _Unset:
    """The type of ``UNSET``: a field an update leaves as it is."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

WRITER_ROLES = frozenset({Role.MEMBER, Role.MAINTAINER})
LONG_TEXT_CHARS = 500


def _field_error(field: str, message: str, code: str = "invalid") -> dict:
    return {field: [{"code": code, "message": message}]}


def _denied(message: str) -> PolicyViolation:
    return PolicyViolation(message, code="permission_denied")


def _jsonable(value: Any) -> Any:
    """An audit payload value in plain JSON types."""
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def _clean(obj: models.Model, *, exclude: Iterable[str] = ()) -> None:
    """Run the model's field validators; raise ``DomainError`` with field messages.

    Uniqueness and constraints are checked by the services themselves, which
    know the right status code (409) and message; relations are objects the
    service already holds, so their existence is not queried again.
    """
    relations = [f.name for f in obj._meta.concrete_fields if f.is_relation]
    try:
        obj.full_clean(
            exclude=[*exclude, *relations],
            validate_unique=False,
            validate_constraints=False,
        )
    except ValidationError as exc:
        fields = {
            name: [
                {"code": e.code or "invalid", "message": m} for e in errors for m in e
            ]
            for name, errors in exc.error_dict.items()
        }
        raise DomainError(
            "The request has invalid fields.", code="validation_error", fields=fields
        ) from exc


def _audited(value: Any) -> Any:
    """A changed value as the audit event keeps it; long text by its digest.

    Audit payloads are capped (``audit.services.MAX_PAYLOAD_BYTES``); a
    model card rewritten in full would not fit twice.
    """
    if isinstance(value, str) and len(value) > LONG_TEXT_CHARS:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()
        return {"sha256": digest, "chars": len(value)}
    return _jsonable(value)


def _apply(obj: models.Model, changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Set the fields that differ and return them as ``{field: {from, to}}``."""
    changed = {}
    for name, value in changes.items():
        if value is UNSET:
            continue
        current = getattr(obj, name)
        if current != value:
            changed[name] = {"from": _audited(current), "to": _audited(value)}
            setattr(obj, name, value)
    return changed


def _duplicate(field: str, message: str) -> Conflict:
    return Conflict(
        message, code="unique", fields=_field_error(field, message, "unique")
    )


def _save_unique(obj: models.Model, *, field: str, message: str, **save_kwargs) -> None:
    """Save, turning a unique-constraint race into ``Conflict`` on ``field``."""
    try:
        with transaction.atomic():
            obj.save(**save_kwargs)
    except IntegrityError as exc:
        raise _duplicate(field, message) from exc


def _writer_agency(actor) -> Agency:
    """The agency the actor registers objects for; members and maintainers only."""
    membership = user_membership(actor)
    if membership is None or membership.role not in WRITER_ROLES:
        raise _denied(
            "Only members and maintainers of an agency register catalogue objects."
        )
    return membership.agency


def _require_writer(actor, agency_id: int) -> None:
    """Members and maintainers of the owning agency, or a platform administrator."""
    if is_platform_admin(actor):
        return
    if user_agency_id(actor) != agency_id or user_role(actor) not in WRITER_ROLES:
        raise _denied("Only the owning agency's members and maintainers may do this.")


def _require_maintainer(actor, agency_id: int) -> None:
    """Maintainers of the owning agency, or a platform administrator."""
    if is_platform_admin(actor):
        return
    if user_agency_id(actor) != agency_id or user_role(actor) != Role.MAINTAINER:
        raise _denied("Only the owning agency's maintainers may do this.")
