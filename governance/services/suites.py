"""The built-in evaluation suites shipped in ``governance/suites``, in the registry.

Each suite's data file becomes a dataset version of the platform's own agency
(``civitas``), so evaluations reference it with its digest and lineage like
any agency's data; then the suites are registered over those versions. Every
write goes through the registry and governance services (and so the audit
chain). Idempotent: what exists is looked up by natural key first.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from audit import services as audit
from config.exceptions import Conflict, DomainError
from governance.models import EvaluationSuite, SuiteDataset
from governance.services.evaluations import _copy_from_storage
from registry import services as registry_services
from registry.models import Agency, Dataset, DatasetVersion, Membership, Role
from registry.selectors import user_agency_id
from registry.services import artifacts as registry_artifacts
from registry.storage import spool

PLATFORM_SLUG = "civitas"
SUITE_CURATOR = "civitas-suites"


def _validate_task_data(task: str, dataset_version) -> None:
    """Check a task's dataset file against the task's JSONL schema."""
    from engine.evaluate import (
        DataError,
        UnsupportedTask,
        read_jsonl,
        validate_records,
    )

    if not dataset_version.storage_key:
        raise DomainError(
            f"Dataset version {dataset_version} has no file yet.",
            code="dataset_file_missing",
        )
    with tempfile.TemporaryDirectory(prefix="civitas-suite-") as tmp:
        path = _copy_from_storage(dataset_version.storage_key, Path(tmp) / "data.jsonl")
        try:
            validate_records(task, read_jsonl(path))
        except (DataError, UnsupportedTask) as exc:
            raise DomainError(
                f"{dataset_version} does not fit task '{task}': {exc}",
                code="suite_data_invalid",
            ) from None


@transaction.atomic
def suite_register(
    *,
    actor,
    name: str,
    version: str,
    licence,
    tasks: list[dict],
    description: str = "",
    builtin: bool = False,
) -> EvaluationSuite:
    """Register a suite whose tasks read registry dataset versions.

    ``tasks`` is ``[{"task", "name"?, "dataset_version": DatasetVersion,
    "options"?}]``. Each dataset version must be visible to the actor and its
    file must match the task's JSONL schema (``suite_data_invalid`` names the
    line). Built-in suites belong to no agency; others to the actor's. The
    dataset versions are also linked as ``SuiteDataset`` rows, which protect
    them from deletion. A name and version already registered raise
    ``Conflict``.
    """
    if EvaluationSuite.objects.filter(name=name, version=version).exists():
        raise Conflict(f"Suite {name}@{version} exists.", code="suite_exists")
    visible = DatasetVersion.objects.visible_to(actor)
    stored = []
    for entry in tasks:
        dataset_version = entry["dataset_version"]
        if not visible.filter(pk=dataset_version.pk).exists():
            raise DomainError(
                "Dataset version does not exist.",
                code="does_not_exist",
                fields={
                    "tasks": [
                        {
                            "code": "does_not_exist",
                            "message": f"No dataset version {dataset_version.pk}.",
                        }
                    ]
                },
            )
        _validate_task_data(entry["task"], dataset_version)
        stored.append(
            {
                "task": entry["task"],
                "name": entry.get("name") or entry["task"],
                "dataset_version": dataset_version.pk,
                "options": entry.get("options", {}),
            }
        )
    agency = None if builtin else Agency.objects.get(pk=user_agency_id(actor))
    suite = EvaluationSuite.objects.create(
        name=name,
        version=version,
        description=description,
        licence=licence,
        agency=agency,
        tasks=stored,
    )
    # Rows, not only JSON: the database then refuses to delete the data.
    SuiteDataset.objects.bulk_create(
        SuiteDataset(suite=suite, dataset_version_id=pk)
        for pk in sorted({entry["dataset_version"] for entry in stored})
    )
    audit.record(
        actor=actor,
        action="suite.registered",
        obj=suite,
        agency=agency,
        payload={"suite": f"{name}@{version}", "tasks": stored},
    )
    return suite


def suites_dir() -> Path:
    """Where the built-in suites are shipped."""
    return Path(settings.BASE_DIR) / "governance" / "suites"


def _suite_files() -> list[tuple[Path, dict]]:
    """Every ``suite.json`` shipped; suites that reuse others' data come last."""
    found = []
    for path in sorted(suites_dir().glob("*/suite.json")):
        spec = json.loads(path.read_text(encoding="utf-8"))
        found.append((path, spec))
    return sorted(
        found,
        key=lambda item: any(t["data"].startswith("../") for t in item[1]["tasks"]),
    )


def _platform_curator(*, admin):
    """The platform agency and the service account that curates its suites."""
    agency = Agency.objects.filter(slug=PLATFORM_SLUG).first()
    if agency is None:
        agency = registry_services.agency_create(
            actor=admin,
            name="Civitas platform",
            slug=PLATFORM_SLUG,
            jurisdiction="EU",
            description="Owner of the built-in evaluation suites and their data.",
        )
    user_model = get_user_model()
    curator = user_model.objects.filter(username=SUITE_CURATOR).first()
    if curator is None:
        curator = user_model.objects.create_user(username=SUITE_CURATOR)
        curator.set_unusable_password()
        curator.save(update_fields=["password"])
    if not Membership.objects.filter(user=curator).exists():
        registry_services.membership_add(
            actor=admin, agency=agency, user=curator, role=Role.MAINTAINER
        )
    return agency, curator


def _dataset_version(*, curator, agency, path: Path, spec: dict, licence):
    """The dataset version holding one suite's data file, created once."""
    slug = spec["tasks"][0]["name"]
    dataset = Dataset.objects.filter(agency=agency, slug=slug).first()
    if dataset is None:
        dataset = registry_services.dataset_create(
            actor=curator,
            name=slug,
            slug=slug,
            description=spec.get("description", ""),
        )
    version = DatasetVersion.objects.filter(
        dataset=dataset, version=spec["version"]
    ).first()
    data = path.parent / spec["tasks"][0]["data"]
    if version is None:
        lines = sum(1 for line in data.read_text(encoding="utf-8").splitlines() if line)
        version = registry_services.dataset_version_create(
            actor=curator,
            dataset=dataset,
            version=spec["version"],
            licence=licence,
            motivation=f"Built-in Civitas evaluation data: {spec['description']}",
            composition=f"{lines} JSON Lines records for the "
            f"'{spec['tasks'][0]['task']}' task, written for Civitas.",
            collection_process="Written by the Civitas maintainers; no scraping, "
            "no personal data.",
            intended_uses="Evaluating small language models registered in Civitas.",
            record_count=lines,
            origin_jurisdiction="EU",
            languages=["en"],
            distribution="Shipped with Civitas under CC0-1.0.",
            maintenance="Versioned with Civitas; a change is a new version.",
        )
    if not version.storage_key:
        with data.open("rb") as source:
            upload = spool(
                source, name=data.name, max_bytes=int(settings.CIVITAS_UPLOAD_MAX_BYTES)
            )
        try:
            version = registry_artifacts.dataset_version_file_upload(
                actor=curator, dataset_version=version, upload=upload
            )
        finally:
            upload.close()
    return version


@transaction.atomic
def builtin_suites_sync(*, admin) -> list[EvaluationSuite]:
    """Register every shipped suite that is not registered yet; return them all.

    ``admin`` is a platform administrator: the platform agency and its
    curator account are created on the first run.
    """
    agency, curator = _platform_curator(admin=admin)
    suites: list[EvaluationSuite] = []
    data_versions: dict[str, DatasetVersion] = {}
    for path, spec in _suite_files():
        licence, _ = registry_services.licence_register(
            actor=curator, expression=spec["licence"]
        )
        own_data = all(not task["data"].startswith("../") for task in spec["tasks"])
        if own_data:
            data_versions[spec["tasks"][0]["name"]] = _dataset_version(
                curator=curator, agency=agency, path=path, spec=spec, licence=licence
            )
        existing = EvaluationSuite.objects.filter(
            name=spec["name"], version=spec["version"]
        ).first()
        if existing is not None:
            suites.append(existing)
            continue
        tasks = [
            {
                "task": task["task"],
                "name": task.get("name") or task["task"],
                "dataset_version": data_versions[task["name"]],
                "options": task.get("options", {}),
            }
            for task in spec["tasks"]
        ]
        suites.append(
            suite_register(
                actor=curator,
                name=spec["name"],
                version=spec["version"],
                licence=licence,
                tasks=tasks,
                description=spec.get("description", ""),
                builtin=True,
            )
        )
    return suites
