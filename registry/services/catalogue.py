"""Governed writes of the catalogue: licences, datasets, models and their versions.

An agency's members and maintainers register datasets, dataset versions,
models and model versions and edit unreleased versions; maintainers update
datasets and models. A version's status is set only by
``model_version_status_sync``, from the status governance derives.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction

from audit import services as audit
from config.exceptions import Conflict, DomainError
from registry import licences
from registry.models import (
    AIModel,
    Dataset,
    DatasetRole,
    DatasetVersion,
    Derivation,
    Licence,
    ModelVersion,
    ModelVersionDataset,
    PersonalData,
    VersionStatus,
    Visibility,
    is_oversight,
)
from registry.services.changes import (
    UNSET,
    _apply,
    _clean,
    _denied,
    _duplicate,
    _field_error,
    _require_maintainer,
    _require_writer,
    _save_unique,
    _writer_agency,
)

LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
# GDPR Recital 26: pseudonymised data is still personal data.
NEEDS_LEGAL_BASIS = frozenset({PersonalData.PERSONAL, PersonalData.PSEUDONYMISED})

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


@transaction.atomic
def model_version_status_sync(
    *,
    actor,
    version: ModelVersion,
    status: str | Callable[[], str],
    detail: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
) -> str:
    """Set a version's status to the one governance derived; the status it now has.

    ``status`` is a ``VersionStatus`` value, as the caller (governance)
    derives it from the version's use cases; pass a callable to have it
    computed only after the version row is locked, so two use cases of the
    same version changing at once serialise on the version and the later one
    sees the earlier one's status. ``detail`` (or a callable giving it,
    called after ``status``) is added to the audit payload. Locks the version
    row (the caller holds its use case row first: use case, then version,
    then the audit chain head). Records ``model_version.status_changed`` only
    when the status changes; ``actor`` may be None (the platform, e.g. at
    expiry). Updates ``version.status`` in place.

    Raises ``ValueError`` for a value that is not a ``VersionStatus``.
    """
    locked = (
        ModelVersion.objects.select_for_update(of=("self",))
        .select_related("model__agency")
        .get(pk=version.pk)
    )
    target = VersionStatus(status() if callable(status) else status)
    details = detail() if callable(detail) else dict(detail or {})
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
        payload={"from": from_status, "to": target, **details},
    )
    return target
