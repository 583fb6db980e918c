"""Governed writes of the catalogue: every create or change goes through here.

Each service is keyword-only, takes the acting user, checks who may act and
the business rules, raises ``config.exceptions`` errors (never Django's
``ValidationError``, which the API would not render), writes, and records one
audit event. Update services take ``UNSET`` for fields the caller leaves
alone, so ``None`` and ``""`` remain real values.

Who may write:

- platform administrators create agencies and act on every agency;
- an agency's maintainers update the agency, its datasets and models, and
  manage its people up to the maintainer role;
- an agency's members and maintainers register datasets, dataset versions,
  models and model versions and edit unreleased versions;
- oversight reviewers read across agencies and write nothing here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone
from knox.models import AuthToken
from knox.settings import knox_settings

from audit import services as audit
from config.exceptions import Conflict, DomainError, PolicyViolation
from registry import licences
from registry.models import (
    Agency,
    AIModel,
    Dataset,
    DatasetRole,
    DatasetVersion,
    Derivation,
    Licence,
    Membership,
    ModelVersion,
    ModelVersionDataset,
    PersonalData,
    Role,
    VersionStatus,
    Visibility,
)
from registry.selectors import (
    forget_membership,
    is_oversight,
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
# Roles an agency maintainer may grant, change or remove; the others are
# platform-wide powers that only a platform administrator hands out.
AGENCY_ROLES = frozenset({Role.MEMBER, Role.MAINTAINER})
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
# GDPR Recital 26: pseudonymised data is still personal data.
NEEDS_LEGAL_BASIS = frozenset({PersonalData.PERSONAL, PersonalData.PSEUDONYMISED})
LONG_TEXT_CHARS = 500


# --- helpers -------------------------------------------------------------------


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


# --- agencies and people -------------------------------------------------------


@transaction.atomic
def agency_create(
    *,
    actor,
    name: str,
    slug: str,
    jurisdiction: str,
    contact_name: str = "",
    contact_email: str = "",
    description: str = "",
    is_oversight_body: bool = False,
) -> Agency:
    """Register a public body as a tenant.

    Platform administrators only (``PolicyViolation`` otherwise). A name or
    slug already taken raises ``Conflict`` naming the field.
    """
    if not is_platform_admin(actor):
        raise _denied("Only platform administrators register agencies.")
    agency = Agency(
        name=name,
        slug=slug,
        jurisdiction=jurisdiction,
        contact_name=contact_name,
        contact_email=contact_email,
        description=description,
        is_oversight_body=is_oversight_body,
    )
    _clean(agency)
    for field in ("name", "slug"):
        if Agency.objects.filter(**{field: getattr(agency, field)}).exists():
            raise _duplicate(field, f"An agency with this {field} exists.")
    _save_unique(agency, field="slug", message="An agency with this slug exists.")
    audit.record(
        actor=actor,
        action="agency.created",
        obj=agency,
        agency=agency,
        payload={
            "slug": agency.slug,
            "name": agency.name,
            "jurisdiction": agency.jurisdiction,
            "is_oversight_body": agency.is_oversight_body,
        },
    )
    return agency


@transaction.atomic
def agency_update(
    *,
    actor,
    agency: Agency,
    name: str = UNSET,
    jurisdiction: str = UNSET,
    contact_name: str = UNSET,
    contact_email: str = UNSET,
    description: str = UNSET,
) -> Agency:
    """Change an agency's descriptive fields; the slug never changes.

    The agency's maintainers or a platform administrator. Whether an agency
    is an oversight body is set at creation only.
    """
    _require_maintainer(actor, agency.pk)
    changed = _apply(
        agency,
        {
            "name": name,
            "jurisdiction": jurisdiction,
            "contact_name": contact_name,
            "contact_email": contact_email,
            "description": description,
        },
    )
    if not changed:
        return agency
    _clean(agency)
    if (
        "name" in changed
        and Agency.objects.filter(name=agency.name).exclude(pk=agency.pk).exists()
    ):
        raise _duplicate("name", "An agency with this name exists.")
    _save_unique(
        agency,
        field="name",
        message="An agency with this name exists.",
        update_fields=list(changed),
    )
    audit.record(
        actor=actor,
        action="agency.updated",
        obj=agency,
        agency=agency,
        payload={"changed": changed},
    )
    return agency


def _check_grant(actor, agency: Agency, *roles: str) -> None:
    """Whether ``actor`` may give or take away each of ``roles`` in ``agency``."""
    if is_platform_admin(actor):
        return
    if user_agency_id(actor) != agency.pk or user_role(actor) != Role.MAINTAINER:
        raise _denied(
            "Only the agency's maintainers or a platform administrator manage "
            "its people."
        )
    for role in roles:
        if role not in AGENCY_ROLES:
            raise _denied(
                f"Only platform administrators grant, change or remove the {role} role."
            )


def _check_role_fits(agency: Agency, role: str) -> None:
    """Reviewers belong to oversight bodies: the role reads across every agency."""
    if role == Role.REVIEWER and not agency.is_oversight_body:
        message = "The reviewer role exists only in oversight bodies."
        raise DomainError(
            message, code="invalid_role", fields=_field_error("role", message)
        )


@transaction.atomic
def membership_add(
    *, actor, agency: Agency, user, role: str = Role.MEMBER
) -> Membership:
    """Give a person a place and a role in an agency.

    A person belongs to one agency at most (``Conflict`` otherwise).
    Maintainers add members and maintainers to their own agency; only
    platform administrators grant reviewer or admin. Raises
    ``PolicyViolation`` when the actor may not grant the role.
    """
    if role not in Role.values:
        raise DomainError(
            "Unknown role.", fields=_field_error("role", f"Unknown role {role!r}.")
        )
    _check_grant(actor, agency, role)
    _check_role_fits(agency, role)
    if Membership.objects.filter(user=user).exists():
        message = "This person already belongs to an agency."
        raise Conflict(
            message, code="already_member", fields=_field_error("user", message)
        )
    membership = Membership(user=user, agency=agency, role=role)
    _save_unique(
        membership, field="user", message="This person already belongs to an agency."
    )
    forget_membership(user)
    audit.record(
        actor=actor,
        action="membership.added",
        obj=membership,
        agency=agency,
        payload={"user": user.get_username(), "role": role},
    )
    return membership


@transaction.atomic
def membership_set_role(*, actor, membership: Membership, role: str) -> Membership:
    """Change a person's role, audited as ``membership.role_changed``.

    Nobody changes their own role. Maintainers move their agency's people
    between member and maintainer; any change touching reviewer or admin is a
    platform administrator's. Raises ``PolicyViolation``.
    """
    if role not in Role.values:
        raise DomainError(
            "Unknown role.", fields=_field_error("role", f"Unknown role {role!r}.")
        )
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("agency", "user")
        .get(pk=membership.pk)
    )
    if membership.user_id == actor.pk:
        raise _denied("Nobody changes their own role.")
    _check_grant(actor, membership.agency, membership.role, role)
    _check_role_fits(membership.agency, role)
    previous = membership.role
    if previous == role:
        return membership
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    forget_membership(membership.user)
    audit.record(
        actor=actor,
        action="membership.role_changed",
        obj=membership,
        agency=membership.agency,
        payload={
            "user": membership.user.get_username(),
            "from": previous,
            "to": role,
        },
    )
    return membership


@transaction.atomic
def membership_remove(*, actor, membership: Membership) -> None:
    """Take a person out of an agency.

    The same rules as a role change: nobody removes themselves, maintainers
    remove members and maintainers, platform administrators anyone.
    """
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("agency", "user")
        .get(pk=membership.pk)
    )
    if membership.user_id == actor.pk:
        raise _denied("Nobody removes their own membership; ask another maintainer.")
    _check_grant(actor, membership.agency, membership.role)
    payload = {"user": membership.user.get_username(), "role": membership.role}
    membership_id, agency, user = membership.pk, membership.agency, membership.user
    membership.delete()
    forget_membership(user)
    audit.record(
        actor=actor,
        action="membership.removed",
        object_type="registry.membership",
        object_id=str(membership_id),
        agency=agency,
        payload=payload,
    )


# --- licences ------------------------------------------------------------------


def licence_lookup(expression: str) -> Licence | None:
    """The registered licence for an expression, by its normalised spelling.

    Raises ``LicenceExpressionError`` (400) for an invalid expression.
    """
    normalised = licences.normalise(expression)
    return Licence.objects.filter(expression__iexact=normalised).first()


@transaction.atomic
def licence_register(*, actor, expression: str) -> tuple[Licence, bool]:
    """Register an SPDX expression, idempotent on its normalised spelling.

    Returns the licence and whether it was created; only a creation is
    audited. Raises ``LicenceExpressionError`` (400, naming unknown
    identifiers) for an expression SPDX does not accept.
    """
    parsed = licences.parse(expression)
    existing = Licence.objects.filter(expression__iexact=parsed.expression).first()
    if existing is not None:
        return existing, False
    licence = Licence(
        expression=parsed.expression,
        spdx_ids=parsed.spdx_ids,
        name=parsed.name,
        is_osi_approved=parsed.is_osi_approved,
        allows_commercial_use=parsed.allows_commercial_use,
        allows_derivatives=parsed.allows_derivatives,
        requires_share_alike=parsed.requires_share_alike,
    )
    try:
        with transaction.atomic():
            licence.save()
    except IntegrityError:
        # A concurrent registration of the same expression won the race.
        return Licence.objects.get(expression=parsed.expression), False
    audit.record(
        actor=actor,
        action="licence.registered",
        obj=licence,
        payload={"expression": licence.expression, "spdx_ids": licence.spdx_ids},
    )
    return licence, True


# --- datasets ------------------------------------------------------------------


@transaction.atomic
def dataset_create(*, actor, name: str, slug: str, description: str = "") -> Dataset:
    """Register a dataset for the actor's agency; it starts private.

    Members and maintainers only. A slug already used in the agency raises
    ``Conflict``. Datasets become public through governance, not here.
    """
    agency = _writer_agency(actor)
    dataset = Dataset(
        agency=agency,
        name=name,
        slug=slug,
        description=description,
        created_by=actor,
    )
    _clean(dataset)
    message = "The agency already has a dataset with this slug."
    if Dataset.objects.filter(agency=agency, slug=slug).exists():
        raise _duplicate("slug", message)
    _save_unique(dataset, field="slug", message=message)
    audit.record(
        actor=actor,
        action="dataset.created",
        obj=dataset,
        agency=agency,
        payload={"slug": slug, "name": name},
    )
    return dataset


@transaction.atomic
def dataset_update(
    *, actor, dataset: Dataset, name: str = UNSET, description: str = UNSET
) -> Dataset:
    """Change a dataset's name or description; slug and visibility never change here.

    The owning agency's maintainers or a platform administrator.
    """
    _require_maintainer(actor, dataset.agency_id)
    changed = _apply(dataset, {"name": name, "description": description})
    if not changed:
        return dataset
    _clean(dataset)
    dataset.save(update_fields=list(changed))
    audit.record(
        actor=actor,
        action="dataset.updated",
        obj=dataset,
        agency=dataset.agency,
        payload={"changed": changed},
    )
    return dataset


def _check_languages(languages: Sequence[str]) -> list[str]:
    bad = [tag for tag in languages if not LANGUAGE_TAG.match(str(tag))]
    if bad:
        message = "Use BCP 47 language tags such as en, fr or pt-BR: " + ", ".join(
            map(str, bad)
        )
        raise DomainError(
            message, code="validation_error", fields=_field_error("languages", message)
        )
    return list(languages)


@transaction.atomic
def dataset_version_create(
    *,
    actor,
    dataset: Dataset,
    version: str,
    licence: Licence,
    motivation: str,
    composition: str,
    collection_process: str,
    intended_uses: str,
    record_count: int,
    origin_jurisdiction: str,
    preprocessing: str = "",
    distribution: str = "",
    maintenance: str = "",
    languages: Sequence[str] = (),
    personal_data: str = PersonalData.NONE,
    legal_basis: str = "",
) -> DatasetVersion:
    """Register an immutable release of a dataset with its datasheet.

    The owning agency's members and maintainers. Personal or pseudonymised
    data needs a legal basis (``DomainError`` on ``legal_basis``). A version
    already registered for the dataset raises ``Conflict``. No service
    changes a dataset version afterwards: a correction is a new version.
    """
    _require_writer(actor, dataset.agency_id)
    if personal_data in NEEDS_LEGAL_BASIS and not legal_basis.strip():
        message = (
            "Personal or pseudonymised data needs a legal basis "
            "(e.g. GDPR Art. 6(1)(e), public task)."
        )
        raise DomainError(
            message,
            code="legal_basis_required",
            fields=_field_error("legal_basis", message, "required"),
        )
    dataset_version = DatasetVersion(
        dataset=dataset,
        version=version,
        licence=licence,
        motivation=motivation,
        composition=composition,
        collection_process=collection_process,
        preprocessing=preprocessing,
        intended_uses=intended_uses,
        distribution=distribution,
        maintenance=maintenance,
        languages=_check_languages(languages),
        record_count=record_count,
        origin_jurisdiction=origin_jurisdiction,
        personal_data=personal_data,
        legal_basis=legal_basis,
        created_by=actor,
    )
    _clean(dataset_version, exclude=["languages"])
    message = f"Version {version} of this dataset is already registered."
    if DatasetVersion.objects.filter(dataset=dataset, version=version).exists():
        raise _duplicate("version", message)
    _save_unique(dataset_version, field="version", message=message)
    audit.record(
        actor=actor,
        action="dataset_version.created",
        obj=dataset_version,
        agency=dataset.agency,
        payload={
            "dataset": dataset.slug,
            "version": version,
            "licence": licence.expression,
            "personal_data": personal_data,
        },
    )
    return dataset_version


# --- models --------------------------------------------------------------------


@transaction.atomic
def model_create(
    *,
    actor,
    name: str,
    slug: str,
    task: str,
    intended_use: str,
    domain: str = "",
    description: str = "",
    out_of_scope_uses: str = "",
) -> AIModel:
    """Register a model family for the actor's agency; it starts private.

    Members and maintainers only. A slug already used in the agency raises
    ``Conflict``. A model becomes public through a governance approval.
    """
    agency = _writer_agency(actor)
    model = AIModel(
        agency=agency,
        name=name,
        slug=slug,
        task=task,
        domain=domain,
        description=description,
        intended_use=intended_use,
        out_of_scope_uses=out_of_scope_uses,
        created_by=actor,
    )
    _clean(model)
    message = "The agency already has a model with this slug."
    if AIModel.objects.filter(agency=agency, slug=slug).exists():
        raise _duplicate("slug", message)
    _save_unique(model, field="slug", message=message)
    audit.record(
        actor=actor,
        action="model.created",
        obj=model,
        agency=agency,
        payload={"slug": slug, "name": name, "task": task},
    )
    return model


@transaction.atomic
def model_publish(*, actor, model: AIModel, reason: str) -> bool:
    """Make a model public; True if it was private, False if it already was.

    A model becomes public once one of its versions is approved for a use
    case (issue 3: "public once approved"), so only oversight — reviewers and
    platform administrators — publishes; ``reason`` says on what grounds.
    Conditional, so a repeated call changes nothing and records nothing.
    Raises ``PolicyViolation`` for anyone else.
    """
    if not is_oversight(actor):
        raise _denied("Only oversight reviewers and administrators publish models.")
    changed = AIModel.objects.filter(pk=model.pk, visibility=Visibility.PRIVATE).update(
        visibility=Visibility.PUBLIC
    )
    if changed:
        model.visibility = Visibility.PUBLIC
        audit.record(
            actor=actor,
            action="model.published",
            obj=model,
            agency=model.agency,
            payload={
                "from": Visibility.PRIVATE,
                "to": Visibility.PUBLIC,
                "reason": reason,
            },
        )
    return bool(changed)


@transaction.atomic
def model_update(
    *,
    actor,
    model: AIModel,
    name: str = UNSET,
    task: str = UNSET,
    domain: str = UNSET,
    description: str = UNSET,
    intended_use: str = UNSET,
    out_of_scope_uses: str = UNSET,
) -> AIModel:
    """Change a model's descriptive fields.

    The owning agency's maintainers or a platform administrator. The slug,
    the agency and the visibility never change here: a model becomes public
    through a governance approval.
    """
    _require_maintainer(actor, model.agency_id)
    changed = _apply(
        model,
        {
            "name": name,
            "task": task,
            "domain": domain,
            "description": description,
            "intended_use": intended_use,
            "out_of_scope_uses": out_of_scope_uses,
        },
    )
    if not changed:
        return model
    _clean(model)
    model.save(update_fields=[*changed, "updated_at"])
    audit.record(
        actor=actor,
        action="model.updated",
        obj=model,
        agency=model.agency,
        payload={"changed": changed},
    )
    return model


def _check_base(actor, base_version: ModelVersion | None, derivation: str) -> None:
    """A base must be visible to the actor and released, and needs a derivation."""
    if base_version is None:
        if derivation:
            message = "A derivation needs a base version."
            raise DomainError(
                message,
                code="validation_error",
                fields=_field_error("base_version", message, "required"),
            )
        return
    if not ModelVersion.objects.visible_to(actor).filter(pk=base_version.pk).exists():
        # The same answer as for an id that was never used (SECURITY C3).
        message = f'Invalid pk "{base_version.pk}" - object does not exist.'
        raise DomainError(
            message,
            code="validation_error",
            fields=_field_error("base_version", message, "does_not_exist"),
        )
    if not base_version.is_released:
        message = "The base version must be released."
        raise DomainError(
            message,
            code="validation_error",
            fields=_field_error("base_version", message, "not_released"),
        )
    if derivation not in Derivation.values:
        message = "Say how this version derives from its base."
        raise DomainError(
            message,
            code="validation_error",
            fields=_field_error("derivation", message, "required"),
        )


def _check_datasets(
    actor, datasets: Sequence[tuple[DatasetVersion, str]]
) -> list[tuple[DatasetVersion, str]]:
    """Dataset links must be visible to the actor, with a known role, once each."""
    links = list(datasets)
    ids = {dv.pk for dv, _ in links}
    visible = set(
        DatasetVersion.objects.visible_to(actor)
        .filter(pk__in=ids)
        .values_list("pk", flat=True)
    )
    errors = []
    seen = set()
    for dataset_version, role in links:
        if dataset_version.pk not in visible:
            errors.append(
                {
                    "code": "does_not_exist",
                    "message": f'Invalid pk "{dataset_version.pk}" - object does not '
                    "exist.",
                }
            )
        elif role not in DatasetRole.values:
            errors.append(
                {"code": "invalid_choice", "message": f"Unknown role {role!r}."}
            )
        elif (dataset_version.pk, role) in seen:
            errors.append(
                {
                    "code": "duplicate",
                    "message": f"Dataset version {dataset_version.pk} is linked "
                    f"twice as {role}.",
                }
            )
        seen.add((dataset_version.pk, role))
    if errors:
        raise DomainError(
            "The request has invalid fields.",
            code="validation_error",
            fields={"datasets": errors},
        )
    return links


def _link_datasets(
    model_version: ModelVersion, links: Sequence[tuple[DatasetVersion, str]]
) -> None:
    ModelVersionDataset.objects.bulk_create(
        ModelVersionDataset(model_version=model_version, dataset_version=dv, role=role)
        for dv, role in links
    )


def _links_payload(links: Sequence[tuple[DatasetVersion, str]]) -> list[dict]:
    return [{"dataset_version": dv.pk, "role": role} for dv, role in links]


@transaction.atomic
def model_version_create(
    *,
    actor,
    model: AIModel,
    version: str,
    licence: Licence,
    base_version: ModelVersion | None = None,
    derivation: str = "",
    datasets: Sequence[tuple[DatasetVersion, str]] = (),
    training_run: str = "",
    training_jurisdiction: str = "",
    training_hardware: str = "",
    training_energy_kwh: Decimal | None = None,
    hosting_jurisdiction: str = "",
    limitations: str = "",
    risks: str = "",
    ethical_considerations: str = "",
) -> ModelVersion:
    """Register a version of a model: its metadata, lineage and dataset links.

    The owning agency's members and maintainers. The version is a semantic
    version unique per model (``Conflict`` on ``version``). A base version
    and every linked dataset version must be visible to the actor, else the
    answer is "does not exist" (SECURITY C3); the base must be released and
    the derivation named. ``datasets`` pairs a dataset version with its role
    (training, fine-tuning, evaluation). The artifact comes later, through
    the artifact endpoints, which also set ``released_at``.
    """
    _require_writer(actor, model.agency_id)
    _check_base(actor, base_version, derivation)
    links = _check_datasets(actor, datasets)
    model_version = ModelVersion(
        model=model,
        version=version,
        licence=licence,
        base_version=base_version,
        derivation=derivation,
        training_run=training_run,
        training_jurisdiction=training_jurisdiction,
        training_hardware=training_hardware,
        training_energy_kwh=training_energy_kwh,
        hosting_jurisdiction=hosting_jurisdiction,
        limitations=limitations,
        risks=risks,
        ethical_considerations=ethical_considerations,
        created_by=actor,
    )
    _clean(model_version)
    message = f"Version {version} of this model is already registered."
    if ModelVersion.objects.filter(model=model, version=version).exists():
        raise _duplicate("version", message)
    _save_unique(model_version, field="version", message=message)
    _link_datasets(model_version, links)
    audit.record(
        actor=actor,
        action="model_version.created",
        obj=model_version,
        agency=model.agency,
        payload={
            "model": model.slug,
            "version": version,
            "licence": licence.expression,
            "base_version": base_version.pk if base_version else None,
            "derivation": derivation,
            "datasets": _links_payload(links),
        },
    )
    return model_version


@transaction.atomic
def model_version_update(
    *,
    actor,
    model_version: ModelVersion,
    licence: Licence = UNSET,
    base_version: ModelVersion | None = UNSET,
    derivation: str = UNSET,
    datasets: Sequence[tuple[DatasetVersion, str]] = UNSET,
    training_run: str = UNSET,
    training_jurisdiction: str = UNSET,
    training_hardware: str = UNSET,
    training_energy_kwh: Decimal | None = UNSET,
    hosting_jurisdiction: str = UNSET,
    limitations: str = UNSET,
    risks: str = UNSET,
    ethical_considerations: str = UNSET,
) -> ModelVersion:
    """Change an unreleased version's metadata; ``datasets`` replaces the links.

    The owning agency's members and maintainers. Once ``released_at`` is set
    the content is frozen: ``Conflict`` (``version_released``). The row is
    locked first, so a release that commits meanwhile cannot be overwritten.
    The model and the version string never change.
    """
    model_version = (
        ModelVersion.objects.select_for_update(of=("self",))
        .select_related("model__agency", "base_version")
        .get(pk=model_version.pk)
    )
    _require_writer(actor, model_version.model.agency_id)
    if model_version.is_released:
        raise Conflict(
            "Released content is immutable: register a new version.",
            code="version_released",
        )
    new_base = model_version.base_version if base_version is UNSET else base_version
    new_derivation = model_version.derivation if derivation is UNSET else derivation
    if base_version is not UNSET or derivation is not UNSET:
        _check_base(actor, new_base, new_derivation)
    changed = _apply(
        model_version,
        {
            "licence": licence,
            "base_version": base_version,
            "derivation": derivation,
            "training_run": training_run,
            "training_jurisdiction": training_jurisdiction,
            "training_hardware": training_hardware,
            "training_energy_kwh": training_energy_kwh,
            "hosting_jurisdiction": hosting_jurisdiction,
            "limitations": limitations,
            "risks": risks,
            "ethical_considerations": ethical_considerations,
        },
    )
    if datasets is not UNSET:
        links = _check_datasets(actor, datasets)
        before = sorted(
            model_version.dataset_links.values_list("dataset_version_id", "role")
        )
        after = sorted((dv.pk, role) for dv, role in links)
        if before != after:
            model_version.dataset_links.all().delete()
            _link_datasets(model_version, links)
            changed["datasets"] = {
                "from": [{"dataset_version": i, "role": r} for i, r in before],
                "to": _links_payload(links),
            }
    if not changed:
        return model_version
    _clean(model_version)
    model_version.save()
    audit.record(
        actor=actor,
        action="model_version.updated",
        obj=model_version,
        agency=model_version.model.agency,
        payload={"changed": changed},
    )
    return model_version


# --- version status ---------------------------------------------------------------

# Use case statuses (governance.models.UseCaseStatus values, spelled out here
# so the registry reads no governance table and imports no governance model).
_UC_ACTIVE_REVIEW = frozenset({"submitted", "in_review"})
_UC_ENDED = frozenset({"retired", "expired", "rejected"})


def version_status_for(statuses: Iterable[str]) -> str:
    """The status a version derives from its use cases' statuses.

    First match wins: ``approved`` if any use case is approved; else
    ``suspended`` if any is suspended; else ``in_review`` if any is
    submitted or in review; else ``retired`` if at least one is retired and
    every other one has ended too (retired, expired or rejected); else
    ``draft`` — no use case, only drafts or cases sent back for changes,
    or only expired and rejected ones (nothing was retired for good: an
    expired case may be re-certified, so the version is not retired).
    """
    found = set(statuses)
    if "approved" in found:
        return VersionStatus.APPROVED
    if "suspended" in found:
        return VersionStatus.SUSPENDED
    if found & _UC_ACTIVE_REVIEW:
        return VersionStatus.IN_REVIEW
    if "retired" in found and found <= _UC_ENDED:
        return VersionStatus.RETIRED
    return VersionStatus.DRAFT


@transaction.atomic
def model_version_status_sync(
    *,
    actor,
    version: ModelVersion,
    statuses: Iterable[str] | Callable[[], Iterable[str]],
) -> str:
    """Recompute a version's status from its use cases; the status it now has.

    ``statuses`` are the statuses of every use case naming ``version``, as
    the caller (governance) computes them; pass a callable to have them
    read only after the version row is locked, so two use cases of the same
    version changing at once serialise on the version and the later one
    sees the earlier one's status. Locks the version row (the caller holds
    its use case row first: use case, then version, then the audit chain
    head). Records ``model_version.status_changed`` only when the status
    changes; ``actor`` may be None (the platform, e.g. at expiry). Updates
    ``version.status`` in place.
    """
    locked = (
        ModelVersion.objects.select_for_update(of=("self",))
        .select_related("model__agency")
        .get(pk=version.pk)
    )
    statuses = sorted(statuses() if callable(statuses) else statuses)
    target = version_status_for(statuses)
    version.status = target
    if locked.status == target:
        return target
    from_status = locked.status
    ModelVersion.objects.filter(pk=locked.pk).update(status=target)
    audit.record(
        actor=actor,
        action="model_version.status_changed",
        obj=locked,
        agency=locked.model.agency,
        payload={"from": from_status, "to": target, "use_case_statuses": statuses},
    )
    return target


# --- API tokens ----------------------------------------------------------------


@transaction.atomic
def token_create(*, actor) -> tuple[AuthToken, str]:
    """Issue a personal API token; the secret is returned here and never again.

    Only the digest is stored (knox). Expiry follows ``REST_KNOX["TOKEN_TTL"]``.
    More live tokens than ``TOKEN_LIMIT_PER_USER`` raises ``Conflict``.
    """
    limit = knox_settings.TOKEN_LIMIT_PER_USER
    if limit is not None:
        live = AuthToken.objects.filter(user=actor, expiry__gt=timezone.now()).count()
        if live >= limit:
            raise Conflict(
                f"You hold {live} live tokens, the most allowed; revoke one first.",
                code="token_limit_reached",
            )
    instance, secret = AuthToken.objects.create(user=actor)
    audit.record(
        actor=actor,
        action="token.created",
        object_type="knox.authtoken",
        object_id=instance.token_key,
        agency=_actor_agency(actor),
        payload={"token_key": instance.token_key, "expiry": _jsonable(instance.expiry)},
    )
    return instance, secret


@transaction.atomic
def token_revoke(*, actor, token_key: str) -> bool:
    """Revoke the actor's token with this key; a revoked token then answers 401.

    Only the actor's own tokens are reachable. Returns False, recording
    nothing, when the actor holds no token with this key.
    """
    deleted, _ = AuthToken.objects.filter(user=actor, token_key=token_key).delete()
    if not deleted:
        return False
    audit.record(
        actor=actor,
        action="token.revoked",
        object_type="knox.authtoken",
        object_id=token_key,
        agency=_actor_agency(actor),
        payload={"token_key": token_key},
    )
    return True


def _actor_agency(actor) -> Agency | None:
    membership = user_membership(actor)
    return membership.agency if membership else None
