"""Registering the demo catalogue through the services, as an agency would.

Every write goes through the registry services (``registry.services`` and
``registry.services.artifacts``) and, for the demo's use cases, the governance
lifecycle services, so the audit chain records the demo as it records any
registration and approval. Platform-wide steps (agencies, memberships, licences) are
taken by the ``demo-loader`` platform administrator, which cannot log in;
catalogue steps by each agency's demo maintainer, because the services let
only an agency's own members register its datasets and models.

Idempotent: each object is looked up by its natural key (agency slug,
username, licence expression, dataset or model slug in its agency, version
string) before anything is built, and the models are trained only when a
model version still lacks its artifact, so a second run adds nothing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from demo.bundles import build_bundles, dataset_records, zip_bundle
from demo.catalogue import (
    AGENCIES,
    DATASETS,
    DEMO_LOADER,
    JURISDICTION,
    LICENCES,
    MODEL_VERSIONS,
    OVERSIGHT,
    PEOPLE,
    USE_CASES,
)
from governance.models import UseCase, UseCaseStatus
from governance.services import decisions, lifecycle, modifications, use_cases
from registry import services
from registry.models import (
    Agency,
    AIModel,
    Dataset,
    DatasetVersion,
    Licence,
    Membership,
    ModelVersion,
    Role,
    Task,
    Visibility,
)
from registry.services import artifacts
from registry.storage import artifact_tmp_dir, spool


@dataclass
class LoadReport:
    """What one run created, for the command to print."""

    created: list[str] = field(default_factory=list)
    trained_seconds: float | None = None

    def add(self, what: str) -> None:
        """Note one created object."""
        self.created.append(what)


def _upload(path: Path, *, name: str):
    """A spooled upload of a local file, hashed on the way, as the API makes one."""
    with open(path, "rb") as source:
        return spool(source, name=name, max_bytes=settings.CIVITAS_UPLOAD_MAX_BYTES)


def _loader():
    """The platform administrator that takes the demo's platform-wide steps.

    Its password is unusable: it exists to be named in the audit chain.
    """
    users = get_user_model().objects
    loader = users.filter(username=DEMO_LOADER).first()
    if loader is None:
        loader = users.create_user(
            username=DEMO_LOADER,
            email="demo-loader@civitas.invalid",
            password=None,
            first_name="Demo catalogue loader",
            is_superuser=True,
        )
    return loader


def _agencies(loader, report: LoadReport) -> dict[str, Agency]:
    existing = {
        a.slug: a for a in Agency.objects.filter(slug__in=[s.slug for s in AGENCIES])
    }
    for spec in AGENCIES:
        if spec.slug not in existing:
            existing[spec.slug] = services.agency_create(
                actor=loader,
                name=spec.name,
                slug=spec.slug,
                jurisdiction=JURISDICTION,
                contact_name=spec.contact_name,
                contact_email=f"contact@{spec.slug}.invalid",
                description=spec.description,
                is_oversight_body=spec.is_oversight_body,
            )
            report.add(f"agency {spec.slug}")
    return existing


def _people(loader, agencies: dict[str, Agency], report: LoadReport) -> dict[str, Any]:
    users = get_user_model().objects
    found = {
        u.username: u for u in users.filter(username__in=[p.username for p in PEOPLE])
    }
    members = set(
        Membership.objects.filter(user__in=found.values()).values_list(
            "user__username", flat=True
        )
    )
    for spec in PEOPLE:
        user = found.get(spec.username)
        if user is None:
            # Staff, so that the person can try the admin; no password until
            # they open the one-time link of ``manage.py invite --new-link``.
            user = users.create_user(
                username=spec.username,
                email=f"{spec.username}@{spec.agency}.invalid",
                password=None,
                first_name=spec.first_name,
                last_name=spec.last_name,
                is_staff=True,
            )
            found[spec.username] = user
            report.add(f"user {spec.username}")
        if spec.username not in members:
            services.membership_add(
                actor=loader, agency=agencies[spec.agency], user=user, role=spec.role
            )
            report.add(f"membership {spec.username} ({spec.role})")
    return found


def _licences(loader, report: LoadReport) -> dict[str, Licence]:
    found = {}
    for expression in LICENCES:
        licence, created = services.licence_register(
            actor=loader, expression=expression
        )
        found[expression] = licence
        if created:
            report.add(f"licence {licence.expression}")
    return found


def _maintainer(people: dict[str, Any], agency: str):
    """The agency's demo maintainer, who registers its catalogue."""
    spec = next(p for p in PEOPLE if p.agency == agency and p.role == Role.MAINTAINER)
    return people[spec.username]


def _datasets(
    people, licences, report: LoadReport, workdir: Path
) -> dict[str, DatasetVersion]:
    found = {}
    for spec in DATASETS:
        actor = _maintainer(people, spec.agency)
        dataset = Dataset.objects.filter(
            agency__slug=spec.agency, slug=spec.slug
        ).first()
        if dataset is None:
            dataset = services.dataset_create(
                actor=actor,
                name=spec.name,
                slug=spec.slug,
                description=spec.description,
            )
            report.add(f"dataset {dataset}")
        version = DatasetVersion.objects.filter(
            dataset=dataset, version="1.0.0"
        ).first()
        records = None
        if version is None:
            records = dataset_records(spec.slug)
            version = services.dataset_version_create(
                actor=actor,
                dataset=dataset,
                version="1.0.0",
                licence=licences[spec.licence],
                record_count=len(records),
                origin_jurisdiction=JURISDICTION,
                languages=["en"],
                personal_data=spec.personal_data,
                legal_basis=spec.legal_basis,
                **spec.datasheet,
            )
            report.add(f"dataset version {version}")
        if not version.storage_key:
            records = records or dataset_records(spec.slug)
            path = workdir / spec.filename
            path.write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                encoding="utf-8",
            )
            upload = _upload(path, name=spec.filename)
            try:
                version = artifacts.dataset_version_file_upload(
                    actor=actor, dataset_version=version, upload=upload
                )
            finally:
                upload.close()
            report.add(f"file of {version}")
        found[spec.slug] = version
    return found


def _models(people, report: LoadReport) -> dict[str, AIModel]:
    found = {}
    for spec in MODEL_VERSIONS:
        actor = _maintainer(people, spec.agency)
        model = AIModel.objects.filter(agency__slug=spec.agency, slug=spec.slug).first()
        if model is None:
            model = services.model_create(
                actor=actor,
                name=spec.name,
                slug=spec.slug,
                task=Task.TEXT_GENERATION,
                domain="Public services",
                description=spec.description,
                intended_use=spec.intended_use,
                out_of_scope_uses=spec.out_of_scope_uses,
            )
            report.add(f"model {model}")
        if spec.is_public and model.visibility != Visibility.PUBLIC:
            services.model_publish(
                actor=_loader(),
                model=model,
                reason="demo catalogue: a public base for the other agency",
            )
            report.add(f"publication of {model}")
        found[f"{spec.agency}/{spec.slug}"] = model
    return found


def _model_versions(
    people,
    licences,
    datasets,
    models,
    report: LoadReport,
    *,
    bundles: Callable[[], dict[str, Path]],
    workdir: Path,
) -> dict[str, ModelVersion]:
    """Register each model version and upload its bundle, in lineage order."""
    found: dict[str, ModelVersion] = {}
    for spec in MODEL_VERSIONS:
        key = f"{spec.agency}/{spec.slug}"
        actor = _maintainer(people, spec.agency)
        model = models[key]
        version = ModelVersion.objects.filter(model=model, version="1.0.0").first()
        if version is None:
            version = services.model_version_create(
                actor=actor,
                model=model,
                version="1.0.0",
                licence=licences[spec.licence],
                base_version=found[spec.base] if spec.base else None,
                derivation=spec.derivation,
                datasets=[(datasets[slug], role) for slug, role in spec.datasets],
                training_run=(
                    f"civitas-modelgen:{spec.bundle}" if spec.datasets else ""
                ),
                training_hardware=spec.training_hardware,
                **spec.card,
            )
            report.add(f"model version {version}")
        if not version.is_released:
            bundle_dir = bundles()[spec.bundle]
            archive = zip_bundle(bundle_dir, workdir / f"{spec.bundle}.zip")
            upload = _upload(archive, name=archive.name)
            try:
                version = artifacts.model_version_artifact_upload(
                    actor=actor, version=version, upload=upload
                )
            finally:
                upload.close()
            # A command, not a web request: the worker's self-test runs here,
            # in the foreground, and releases the version (or fails it).
            artifacts.artifact_verify(version_id=version.pk)
            version.refresh_from_db()
            report.add(f"bundle of {version}")
        if version.base_version_id and version.is_released:
            # The comparison with the base a worker would make on release,
            # here in the foreground; kept as it is on a second run.
            modifications.modification_assess(version_id=version.pk)
        found[key] = version
    return found


def _person(people, agency: str, role: str):
    spec = next(p for p in PEOPLE if p.agency == agency and p.role == role)
    return people[spec.username]


def _use_cases(people, versions, report: LoadReport) -> None:
    """Write, assess, submit and approve each demo use case, where still missing.

    Through the lifecycle services, by the people the four-eyes rules want:
    the agency's member writes and assesses, its maintainer submits, the
    oversight reviewer reviews and approves (which publishes the model). A use
    case found by title in its agency is taken from where it stands.
    """
    reviewer = _person(people, OVERSIGHT, Role.REVIEWER)
    for spec in USE_CASES:
        member = _person(people, spec.agency, Role.MEMBER)
        use_case = UseCase.objects.filter(
            agency__slug=spec.agency, title=spec.title
        ).first()
        if use_case is None:
            use_case = use_cases.use_case_create(
                actor=member,
                model_version=versions[spec.model],
                title=spec.title,
                purpose=spec.purpose,
                public_service=spec.public_service,
                affected_people=spec.affected_people,
                decision_informed=spec.decision_informed,
                human_oversight=spec.human_oversight,
                valid_until=timezone.localdate() + timedelta(days=365),
            )
            use_cases.use_case_assess(
                actor=member, use_case=use_case, answers=spec.answers
            )
            report.add(f"use case {spec.title!r}")
        if use_case.status == UseCaseStatus.DRAFT:
            lifecycle.use_case_submit(
                actor=_person(people, spec.agency, Role.MAINTAINER),
                use_case=use_case,
            )
            use_case.refresh_from_db()
        if use_case.status == UseCaseStatus.SUBMITTED:
            lifecycle.use_case_start_review(actor=reviewer, use_case=use_case)
            use_case.refresh_from_db()
        if use_case.status == UseCaseStatus.IN_REVIEW:
            decisions.use_case_approve(
                actor=reviewer, use_case=use_case, rationale=spec.rationale
            )
            report.add(f"approval of {spec.title!r}")


def load_catalogue() -> LoadReport:
    """Create whatever part of the demo catalogue is missing; return what was made.

    Models are trained (about ten seconds on two cores) only when a model
    version still lacks its artifact, and at most once per run. Raises the
    services' errors if the database holds conflicting objects under the
    demo's natural keys.
    """
    report = LoadReport()
    # Beside the artifact store, so that storing an upload is a rename.
    workdir = Path(tempfile.mkdtemp(prefix="demo-", dir=artifact_tmp_dir()))
    built: dict[str, Path] = {}

    def bundles() -> dict[str, Path]:
        if not built:
            started = time.perf_counter()
            built.update(build_bundles(workdir / "bundles"))
            report.trained_seconds = time.perf_counter() - started
        return built

    try:
        loader = _loader()
        agencies = _agencies(loader, report)
        people = _people(loader, agencies, report)
        licences = _licences(loader, report)
        datasets = _datasets(people, licences, report, workdir)
        models = _models(people, report)
        versions = _model_versions(
            people, licences, datasets, models, report, bundles=bundles, workdir=workdir
        )
        _use_cases(people, versions, report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report
