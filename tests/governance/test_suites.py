"""Built-in suites become registry dataset versions and suites, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db.models import ProtectedError

from config.exceptions import DomainError
from governance.models import EvaluationSuite, SuiteDataset
from governance.services import suites as suite_services
from governance.services.suites import builtin_suites_sync
from registry.models import DatasetVersion
from tests.factories import DatasetVersionFactory, LicenceFactory

pytestmark = pytest.mark.django_db


def test_builtin_suites_sync_registers_every_shipped_suite_once(platform_admin):
    first = builtin_suites_sync(admin=platform_admin)
    second = builtin_suites_sync(admin=platform_admin)

    names = sorted(suite.name for suite in first)
    assert "civitas-core" in names
    assert len(names) == 6
    assert [s.pk for s in second] == [s.pk for s in first]
    assert EvaluationSuite.objects.count() == 6
    core = EvaluationSuite.objects.get(name="civitas-core")
    assert [task["task"] for task in core.tasks] == [
        "perplexity",
        "multiple_choice",
        "stereotype_pairs",
        "refusal",
    ]
    data = DatasetVersion.objects.filter(
        pk__in=[t["dataset_version"] for t in core.tasks]
    )
    assert data.count() == 4
    assert all(len(version.digest) == 64 and version.storage_key for version in data)
    assert core.agency_id is None  # built-in: no agency owns the suite


def test_a_builtin_suite_has_one_name_everywhere(platform_admin):
    """Registry row, suite.json, directory, docs and README: the civitas- name."""
    import re

    from django.conf import settings

    registered = sorted(s.name for s in builtin_suites_sync(admin=platform_admin))
    assert all(name.startswith("civitas-") for name in registered)
    directories = sorted(
        path.parent.name for path in suite_services.suites_dir().glob("*/suite.json")
    )
    assert directories == registered
    root = Path(settings.BASE_DIR)
    evaluation_doc = (root / "docs" / "evaluation.md").read_text(encoding="utf-8")
    section = evaluation_doc.split("## Built-in suites", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
    assert sorted(listed) == registered
    for text in (evaluation_doc, (root / "README.md").read_text(encoding="utf-8")):
        for path in re.findall(r"suites/([\w-]+)/", text):
            assert path in registered


def test_a_suite_whose_data_does_not_fit_its_task_is_refused(member_a):
    key = storages["artifacts"].save(
        "tests/bad.jsonl", ContentFile(b'{"context": "no choices here"}\n')
    )
    bad = DatasetVersionFactory(
        dataset__agency=member_a.membership.agency, storage_key=key, digest="a" * 64
    )

    with pytest.raises(DomainError) as refused:
        suite_services.suite_register(
            actor=member_a,
            name="mine",
            version="1.0.0",
            licence=LicenceFactory(expression="CC0-1.0"),
            tasks=[{"task": "multiple_choice", "dataset_version": bad}],
        )

    assert refused.value.code == "suite_data_invalid"
    assert "line 1" in refused.value.message
    assert not EvaluationSuite.objects.filter(name="mine").exists()


def test_a_dataset_version_a_suite_reads_cannot_be_deleted(platform_admin):
    [core] = [
        suite
        for suite in builtin_suites_sync(admin=platform_admin)
        if suite.name == "civitas-core"
    ]
    held = core.datasets.order_by("pk")
    assert sorted(held.values_list("pk", flat=True)) == sorted(
        {task["dataset_version"] for task in core.tasks}
    )

    with pytest.raises(ProtectedError) as refused:
        held.first().delete()

    assert {type(o) for o in refused.value.protected_objects} == {SuiteDataset}

    assert core.datasets.count() == 4
