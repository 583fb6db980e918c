"""load_demo: the catalogue is built once, through the services, with real models."""

from __future__ import annotations

import hashlib
import time
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.files.storage import storages
from django.core.management import call_command

from audit.models import AuditEvent
from demo import catalogue as demo
from governance.models import ModificationAssessment
from registry import lineage
from registry.models import (
    Agency,
    ArtifactState,
    DatasetVersion,
    Derivation,
    Licence,
    Membership,
    ModelVersion,
    PersonalData,
    Role,
)


@pytest.fixture
def demo_dirs(settings, tmp_path):
    """A private var directory, artifact store and scratch directory."""
    settings.VAR_DIR = tmp_path / "var"
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "store")},
        },
    }
    settings.ARTIFACT_TMP_DIR = tmp_path / "scratch"
    return tmp_path


def _counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (
            get_user_model(),
            Agency,
            Membership,
            Licence,
            DatasetVersion,
            ModelVersion,
            AuditEvent,
        )
    }


def _load() -> tuple[str, float]:
    out = StringIO()
    started = time.perf_counter()
    call_command("load_demo", stdout=out)
    return out.getvalue(), time.perf_counter() - started


@pytest.mark.slow
@pytest.mark.django_db
def test_load_demo_builds_the_catalogue_once(demo_dirs):
    first_output, first_seconds = _load()
    after_first = _counts()
    second_output, second_seconds = _load()

    # The second run finds everything by its natural key and adds nothing.
    assert _counts() == after_first
    assert "nothing to add" in second_output
    assert second_seconds < 5
    print(f"load_demo: first run {first_seconds:.1f} s, second {second_seconds:.2f} s")

    # Two agencies and an oversight body, with people in every role.
    assert Agency.objects.filter(is_oversight_body=False).count() >= 2
    assert Agency.objects.filter(is_oversight_body=True).count() >= 1
    assert set(Membership.objects.values_list("role", flat=True)) == set(Role.values)
    assert (
        Licence.objects.filter(
            expression__in=["Apache-2.0", "CC-BY-4.0", "CC-BY-NC-4.0"]
        ).count()
        == 3
    )

    # Three dataset versions with datasheets and stored files; one pseudonymised.
    datasets = list(DatasetVersion.objects.select_related("dataset"))
    assert len(datasets) >= 3
    for dataset_version in datasets:
        assert dataset_version.motivation
        assert dataset_version.composition
        assert dataset_version.artifact_state == ArtifactState.AVAILABLE
        assert dataset_version.record_count > 0
    [pseudonymised] = [
        d for d in datasets if d.personal_data == PersonalData.PSEUDONYMISED
    ]
    assert "6(1)(e)" in pseudonymised.legal_basis

    # Four released versions whose stored bundles are what their digests say.
    versions = {
        v.model.slug: v for v in ModelVersion.objects.select_related("model__agency")
    }
    assert len(versions) >= 4
    store = storages["artifacts"]
    for version in versions.values():
        assert version.is_released
        with store.open(version.artifact_key, "rb") as stored:
            assert hashlib.sha256(stored.read()).hexdigest() == version.artifact_digest
        assert version.kind == "causal_lm_kv"
        assert version.parameter_count > 100_000
    tiny, small = versions["arden-tiny-lm"], versions["arden-small-lm"]
    tuned = versions["arden-requests-assistant"]
    quantised = versions["lakeland-small-lm-int8"]
    assert small.parameter_count > tiny.parameter_count
    assert (tuned.base_version, tuned.derivation) == (tiny, Derivation.FINE_TUNED)
    assert tuned.artifact_digest != tiny.artifact_digest
    assert (quantised.base_version, quantised.derivation) == (
        small,
        Derivation.QUANTISED,
    )
    assert quantised.model.agency != small.model.agency
    assert quantised.quantisation == "int8"
    assert small.quantisation == "fp32"

    # Both derived versions are compared with their bases: both outcomes show.
    assessed = {a.model_version_id: a for a in ModificationAssessment.objects.all()}
    assert assessed[tuned.pk].classes == ["fine_tune"]
    assert assessed[tuned.pk].max_relative_change > 0
    assert assessed[quantised.pk].classes == ["quantisation"]
    assert assessed[quantised.pk].base_version_id == small.pk

    # The fine-tuned version's lineage: its base, its data, the licence conflict.
    reviewer = get_user_model().objects.get(username="oversight.reviewer")
    graph = lineage.model_version_lineage(tuned, user=reviewer)
    edges = {(e["source"], e["target"], e["relation"]) for e in graph["edges"]}
    requests = DatasetVersion.objects.get(dataset__slug=demo.REQUESTS)
    corpus = DatasetVersion.objects.get(dataset__slug=demo.CORPUS)
    tuned_id = lineage.model_version_node_id(tuned.pk)
    assert (lineage.model_version_node_id(tiny.pk), tuned_id, "base_of") in edges
    assert (
        tuned_id,
        lineage.dataset_version_node_id(requests.pk),
        "fine_tuned_on",
    ) in edges
    assert (
        lineage.model_version_node_id(tiny.pk),
        lineage.dataset_version_node_id(corpus.pk),
        "trained_on",
    ) in edges
    [warning] = graph["warnings"]
    assert warning["node"] == tuned_id
    assert "CC-BY-NC-4.0" in warning["message"]
    assert "Apache-2.0" in warning["message"]

    # The audit chain names the demo's actors, as for any registration.
    labels = set(AuditEvent.objects.values_list("actor_label", flat=True))
    assert any(label.startswith(f"{demo.DEMO_LOADER}#") for label in labels)
    assert any(label.startswith("arden.maintainer#") for label in labels)
    assert (
        AuditEvent.objects.filter(action="model_version.artifact_uploaded").count() == 4
    )

    # Only the administrator can log in; only their password is printed.
    password = (demo_dirs / "var" / "demo-admin-password").read_text().strip()
    assert f"admin / {password}" in first_output
    assert f"admin / {password}" in second_output
    people = get_user_model().objects.exclude(username="admin")
    assert not any(person.has_usable_password() for person in people)

    # The public register is not empty: two use cases approved, by the book.
    from django.test import Client

    from governance.register import register_use_cases

    entries = {u.title: u for u in register_use_cases()}
    assert set(entries) == {spec.title for spec in demo.USE_CASES}
    for use_case in entries.values():
        assert use_case.status == "approved"
        assert AuditEvent.objects.filter(
            action="use_case.approved", object_id=str(use_case.pk)
        ).exists()
    home = Client().get("/").content.decode()
    assert "Drafting replies to residents" in home
