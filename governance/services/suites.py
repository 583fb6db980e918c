"""The built-in evaluation suites shipped in ``governance/suites``, in the registry.

Each suite's data file becomes a dataset version of the platform's own agency
(``civitas``), so evaluations reference it with its digest and lineage like
any agency's data; then the suites are registered over those versions. Every
write goes through the registry and governance services (and so the audit
chain). Idempotent: what exists is looked up by natural key first.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from audit import services as audit
from config.exceptions import Conflict, DomainError, PolicyViolation
from engine.suites import is_task_metric
from governance.models import EvaluationSuite, SuiteDataset
from governance.models.evaluations import SuiteVisibility
from governance.services.evaluations import _copy_from_storage
from registry import services as registry_services
from registry.models import (
    Agency,
    Dataset,
    DatasetVersion,
    Membership,
    Role,
    Visibility,
)
from registry.selectors import user_agency_id, user_membership, user_role
from registry.services import artifacts as registry_artifacts
from registry.storage import spool

PLATFORM_SLUG = "civitas"
SUITE_CURATOR = "civitas-suites"
SUITE_WRITER_ROLES = frozenset({Role.MEMBER, Role.MAINTAINER})


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


# The datasheet questions a dataset version must answer before a suite reads it
# (Gebru et al.; ``registry.models.DatasetVersion``).
DATASHEET_FIELDS = ("motivation", "composition", "collection_process", "intended_uses")


def _fields_error(field: str, code: str, message: str, cls=DomainError):
    return cls(message, code=code, fields={field: [{"code": code, "message": message}]})


def _checked_dataset_version(
    actor, entry: dict, index: int, *, visibility: str, builtin: bool
):
    """The task's dataset version if the actor may build a suite over it.

    It must be visible to the actor, answer its datasheet, hold a file that
    fits the task and, for a shared suite, be public (else other agencies
    would read private data through the suite's per-item results).
    """
    dataset_version = entry["dataset_version"]
    where = f"tasks[{index}].dataset_version"
    visible = DatasetVersion.objects.visible_to(actor).select_related("dataset")
    found = visible.filter(pk=dataset_version.pk).first()
    if found is None:
        raise _fields_error(
            "tasks",
            "does_not_exist",
            f"{where}: no dataset version {dataset_version.pk}.",
        )
    missing = [name for name in DATASHEET_FIELDS if not getattr(found, name).strip()]
    if missing:
        raise _fields_error(
            "tasks",
            "datasheet_missing",
            f"{where}: {found} has no datasheet ({', '.join(missing)} empty); "
            "fill it in before a suite uses the data.",
        )
    if (
        not builtin
        and visibility == SuiteVisibility.SHARED
        and found.dataset.visibility != Visibility.PUBLIC
    ):
        raise _fields_error(
            "visibility",
            "dataset_not_public",
            f"{where}: {found} is private to its agency; a shared suite may only "
            "read public data.",
        )
    _validate_task_data(entry["task"], found)
    return found


def _check_metrics(stored: list[dict], metrics: list[str], thresholds: dict) -> None:
    """Every named metric is ``task name.metric`` of a task of the suite."""
    tasks = {entry["name"]: entry["task"] for entry in stored}
    for field, names in (("metrics", metrics), ("thresholds", list(thresholds))):
        for name in names:
            task_name, _, metric = name.partition(".")
            if task_name not in tasks or not is_task_metric(tasks[task_name], metric):
                raise _fields_error(
                    field,
                    "unknown_metric",
                    f"{name!r} is not 'task.metric' for a task of this suite "
                    f"({', '.join(sorted(tasks))}) and a metric that task reports.",
                )
    for name, bounds in thresholds.items():
        ok = (
            isinstance(bounds, dict)
            and bounds
            and set(bounds) <= {"min", "max"}
            and all(
                isinstance(v, int | float) and not isinstance(v, bool)
                for v in bounds.values()
            )
        )
        if not ok or bounds.get("min", -math.inf) > bounds.get("max", math.inf):
            raise _fields_error(
                "thresholds",
                "invalid_threshold",
                f'{name}: give {{"min": number}}, {{"max": number}} or both, '
                "with min <= max.",
            )


def _stored_tasks(actor, tasks, *, visibility: str, builtin: bool) -> list[dict]:
    stored, names = [], set()
    for index, entry in enumerate(tasks):
        dataset_version = _checked_dataset_version(
            actor, entry, index, visibility=visibility, builtin=builtin
        )
        name = entry.get("name") or entry["task"]
        if name in names:
            raise _fields_error(
                "tasks",
                "duplicate_task_name",
                f"tasks[{index}].name: '{name}' names another task of the suite; "
                "give each task its own name.",
            )
        names.add(name)
        stored.append(
            {
                "task": entry["task"],
                "name": name,
                "dataset_version": dataset_version.pk,
                "options": entry.get("options", {}),
            }
        )
    return stored


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
    visibility: str = SuiteVisibility.AGENCY,
    metrics: list[str] | None = None,
    thresholds: dict | None = None,
    previous: EvaluationSuite | None = None,
) -> EvaluationSuite:
    """Register a suite whose tasks read registry dataset versions.

    ``tasks`` is ``[{"task", "name"?, "dataset_version": DatasetVersion,
    "options"?}]``. Each dataset version must be visible to the actor, have
    its datasheet (``datasheet_missing``) and a file matching the task's JSONL
    schema (``suite_data_invalid`` names the line); a ``shared`` suite reads
    public data only. ``metrics`` and the keys of ``thresholds``
    (``{"min"?, "max"?}``) are ``task name.metric``. Built-in suites belong
    to no agency; others to the actor's, who must be a member or maintainer.
    ``previous`` is the version this one replaces (same name). The dataset
    versions are also linked as ``SuiteDataset`` rows, which protect them
    from deletion. A name and version already registered raise ``Conflict``.
    """
    metrics, thresholds = list(metrics or []), dict(thresholds or {})
    agency = None if builtin else _writer_agency(actor)
    if EvaluationSuite.objects.filter(name=name, version=version).exists():
        raise _fields_error(
            "version", "suite_exists", f"Suite {name}@{version} exists.", Conflict
        )
    same_name = EvaluationSuite.objects.filter(name=name).order_by("-created_at")
    latest = same_name.first()
    if latest is not None and latest.agency_id != (agency.pk if agency else None):
        # A policy names a suite by name: one owner per name, or another
        # agency could pass a required suite with a suite of its own.
        raise _fields_error(
            "name",
            "suite_name_taken",
            f"The suite name '{name}' belongs to another owner; choose another.",
            Conflict,
        )
    previous = previous or latest
    stored = _stored_tasks(actor, tasks, visibility=visibility, builtin=builtin)
    _check_metrics(stored, metrics, thresholds)
    suite = EvaluationSuite.objects.create(
        name=name,
        version=version,
        description=description,
        licence=licence,
        agency=agency,
        tasks=stored,
        visibility=visibility,
        metrics=metrics,
        thresholds=thresholds,
        previous=previous,
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
        payload={
            "suite": f"{name}@{version}",
            "tasks": stored,
            "visibility": visibility,
            "metrics": metrics,
            "thresholds": thresholds,
            "previous": str(previous) if previous else None,
        },
    )
    return suite


def _writer_agency(actor) -> Agency:
    """The actor's agency, if they may register suites for it."""
    membership = user_membership(actor)
    if membership is None or membership.role not in SUITE_WRITER_ROLES:
        raise PolicyViolation(
            "Only members and maintainers of an agency register its suites.",
            code="permission_denied",
        )
    return membership.agency


def _editable(actor, suite: EvaluationSuite, verb: str) -> None:
    """Refuse changes to built-in, foreign or already used suites."""
    if suite.agency_id is None:
        raise PolicyViolation(
            f"Built-in suites cannot be {verb}; register your own suite.",
            code="suite_builtin",
        )
    if user_agency_id(actor) != suite.agency_id or user_role(actor) not in (
        SUITE_WRITER_ROLES
    ):
        raise PolicyViolation(
            f"Only the owning agency's members and maintainers may {verb} it.",
            code="permission_denied",
        )
    if suite.runs.exists():
        raise Conflict(
            f"Suite {suite} has been used by an evaluation and can no longer be "
            f"{verb}; register a new version instead.",
            code="suite_in_use",
        )


@transaction.atomic
def suite_version_create(
    *, actor, suite: EvaluationSuite, version: str, **changes
) -> EvaluationSuite:
    """Register ``version`` of a suite: the previous one's fields, with changes.

    ``changes`` may give ``tasks`` (as ``suite_register`` takes them),
    ``description``, ``licence``, ``visibility``, ``metrics`` and
    ``thresholds``; what is not given is copied. Only the owning agency's
    writers may; the new version links to ``suite`` as its ``previous``.
    """
    if suite.agency_id is None or user_agency_id(actor) != suite.agency_id:
        raise PolicyViolation(
            "Only the owning agency registers new versions of its suite.",
            code="permission_denied",
        )
    tasks = changes.pop("tasks", None)
    if tasks is None:
        versions = DatasetVersion.objects.in_bulk(
            [entry["dataset_version"] for entry in suite.tasks]
        )
        tasks = [
            {**entry, "dataset_version": versions[entry["dataset_version"]]}
            for entry in suite.tasks
        ]
    fields = {
        key: changes.get(key, getattr(suite, key))
        for key in ("description", "licence", "visibility", "metrics", "thresholds")
    }
    return suite_register(
        actor=actor,
        name=suite.name,
        version=version,
        tasks=tasks,
        previous=suite,
        **fields,
    )


@transaction.atomic
def suite_update(*, actor, suite: EvaluationSuite, **changes) -> EvaluationSuite:
    """Change an unused suite's description, visibility, metrics or thresholds.

    Raises ``Conflict`` (``suite_in_use``) once a run used it: evidence must
    keep meaning what it meant. The tasks never change; a new version does.
    """
    suite = EvaluationSuite.objects.select_for_update().get(pk=suite.pk)
    _editable(actor, suite, "changed")
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes.get("visibility") == SuiteVisibility.SHARED:
        for index, entry in enumerate(suite.tasks):
            pk = entry["dataset_version"]
            _checked_dataset_version(
                actor,
                {**entry, "dataset_version": DatasetVersion.objects.get(pk=pk)},
                index,
                visibility=SuiteVisibility.SHARED,
                builtin=False,
            )
    _check_metrics(
        suite.tasks,
        changes.get("metrics", suite.metrics),
        changes.get("thresholds", suite.thresholds),
    )
    for key, value in changes.items():
        setattr(suite, key, value)
    suite.save(update_fields=list(changes))
    audit.record(
        actor=actor,
        action="suite.updated",
        obj=suite,
        agency=suite.agency,
        payload={"suite": str(suite), "changes": sorted(changes)},
    )
    return suite


@transaction.atomic
def suite_delete(*, actor, suite: EvaluationSuite) -> None:
    """Delete an unused suite of the actor's agency (``suite_in_use`` once used)."""
    suite = EvaluationSuite.objects.select_for_update().get(pk=suite.pk)
    _editable(actor, suite, "deleted")
    if suite.next_versions.exists():
        raise Conflict(
            f"Suite {suite} has later versions; it stays as their history.",
            code="suite_has_versions",
        )
    audit.record(
        actor=actor,
        action="suite.deleted",
        obj=suite,
        agency=suite.agency,
        payload={"suite": str(suite)},
    )
    suite.dataset_links.all().delete()
    suite.delete()


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
