"""Cross-agency 404 on the file and item routes the catalogue tenancy tests miss.

Agency B's member asks, with a request that succeeds for agency A's member, for
A's private model version artifact (multipart upload, reference), A's dataset
version file (read, multipart upload, raw upload, reference), A's evaluation
run items and the version history of a policy scoped to agency A:
each answers 404 like an id never used, and A's object is unchanged. Each
test ends by making the owner's identical request, so the 404 cannot come from
a malformed request.
"""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.files.uploadedfile import SimpleUploadedFile

from governance.models import EvaluationRun, EvaluationSuite, Policy, RunStatus
from governance.services import policies as policy_services
from registry.models import ArtifactState, DatasetVersion
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    LicenceFactory,
    ModelVersionFactory,
)
from tests.registry.artifact_bundles import (  # noqa: F401 - fixtures
    artifact_dirs_fixture,
    files_under,
    fresh_throttles,
    put_raw,
    row,
    tiny_model_bytes,
)
from tests.registry.conftest import *  # noqa: F403 - people and API clients

pytestmark = pytest.mark.django_db

# Route names (namespace ``v1``) whose cross-agency 404 this module proves;
# tests/test_tenancy_coverage.py reads it.
COVERED_ROUTES = {
    "model-version-artifact",
    "model-version-artifact-reference",
    "dataset-version-file",
    "evaluation-items",
    "policy-versions",
}


@pytest.fixture
def version_a(agency_a, member_a):
    model = AIModelFactory(agency=agency_a, created_by=member_a)
    return ModelVersionFactory(model=model, created_by=member_a)


@pytest.fixture
def dataset_version_a(agency_a, member_a):
    dataset = DatasetFactory(agency=agency_a, created_by=member_a)
    return DatasetVersionFactory(dataset=dataset, created_by=member_a)


def _onnx_part() -> SimpleUploadedFile:
    return SimpleUploadedFile(
        "arden-city-faq.onnx", tiny_model_bytes(), "application/octet-stream"
    )


def _assert_not_found(response) -> None:
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"


def test_multipart_artifact_upload_to_another_agencys_version_is_404(
    api_a, api_b, version_a, artifact_dirs
):
    url = f"/api/v1/model-versions/{version_a.pk}/artifact/"
    before = row(version_a)

    _assert_not_found(api_b.post(url, {"file": _onnx_part()}, format="multipart"))

    assert row(version_a) == before
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []
    owner = api_a.post(url, {"file": _onnx_part()}, format="multipart")
    assert owner.status_code == 202, owner.content


def test_artifact_reference_to_another_agencys_version_is_404(
    api_a, api_b, version_a, artifact_dirs, tmp_path, settings
):
    drop = tmp_path / "drop"
    drop.mkdir()
    settings.CIVITAS_REFERENCE_ROOTS = [str(drop)]
    model = drop / "arden-city-faq.onnx"
    model.write_bytes(tiny_model_bytes())
    body = {
        "uri": model.as_uri(),
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
    }
    url = f"/api/v1/model-versions/{version_a.pk}/artifact/reference/"
    before = row(version_a)

    _assert_not_found(api_b.post(url, body, format="json"))

    assert row(version_a) == before
    assert before["artifact_state"] == ArtifactState.NONE
    assert api_a.post(url, body, format="json").status_code == 202


def _dataset_row(version) -> dict:
    return DatasetVersion.objects.filter(pk=version.pk).values().get()


def test_dataset_file_reference_to_another_agencys_version_is_404(
    api_a, api_b, dataset_version_a, artifact_dirs, tmp_path, settings
):
    drop = tmp_path / "drop"
    drop.mkdir()
    settings.CIVITAS_REFERENCE_ROOTS = [str(drop)]
    data = drop / "arden-faq.jsonl"
    data.write_bytes(b'{"q": "When is bulky waste collected?", "a": "Tuesdays"}\n')
    body = {
        "uri": data.as_uri(),
        "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
    }
    url = f"/api/v1/dataset-versions/{dataset_version_a.pk}/file/reference/"
    before = _dataset_row(dataset_version_a)

    _assert_not_found(api_b.post(url, body, format="json"))

    assert _dataset_row(dataset_version_a) == before
    assert before["artifact_state"] == ArtifactState.NONE
    assert api_a.post(url, body, format="json").status_code == 202


@pytest.mark.parametrize("method", ["get", "post", "put"])
def test_dataset_file_of_another_agencys_version_is_404(
    api_a, api_b, dataset_version_a, artifact_dirs, method
):
    url = f"/api/v1/dataset-versions/{dataset_version_a.pk}/file/"
    content = b'{"q": "When is bulky waste collected?", "a": "Tuesdays"}\n'

    def ask(client):
        if method == "get":
            return client.get(url)
        if method == "post":
            part = SimpleUploadedFile("arden-faq.jsonl", content, "application/json")
            return client.post(url, {"file": part}, format="multipart")
        return put_raw(client, url, content, filename="arden-faq.jsonl")

    if method == "get":  # A's version has a file to read
        assert put_raw(api_a, url, content).status_code == 201
    before = _dataset_row(dataset_version_a)

    _assert_not_found(ask(api_b))

    assert _dataset_row(dataset_version_a) == before
    assert files_under(artifact_dirs.scratch) == []
    assert ask(api_a).status_code == (200 if method == "get" else 201)


def test_evaluation_items_of_another_agencys_run_are_404(
    api_a, api_b, version_a, member_a, artifact_dirs
):
    items = b'{"task": "perplexity", "index": 0, "nll": 2.31}\n'
    key = storages["artifacts"].save("runs/items.jsonl", ContentFile(items))
    suite = EvaluationSuite.objects.create(
        name="arden-faq",
        version="1.0.0",
        licence=LicenceFactory(expression="CC0-1.0"),
        tasks=[],
    )
    run = EvaluationRun.objects.create(
        model_version=version_a,
        suite=suite,
        status=RunStatus.SUCCEEDED,
        requested_by=member_a,
        artifact_digest="a" * 64,
        items_key=key,
    )
    url = f"/api/v1/evaluations/{run.pk}/items/"

    _assert_not_found(api_b.get(url))

    run.refresh_from_db()
    assert (run.status, run.items_key) == (RunStatus.SUCCEEDED, key)
    owner = api_a.get(url)
    assert owner.status_code == 200
    assert b"".join(owner.streaming_content) == items


def test_version_history_of_another_agencys_policy_is_404(
    api_a, api_b, reviewer, agency_a
):
    policy = policy_services.policy_create(
        actor=reviewer,
        name="arden-city-only",
        title="Arden City house rules",
        scope="agency",
        agency=agency_a,
        rules=[{"id": "pd", "kind": "personal_data", "mode": "forbidden"}],
    )
    url = f"/api/v1/policies/{policy.pk}/versions/"

    _assert_not_found(api_b.get(url))

    assert list(Policy.objects.filter(name="arden-city-only")) == [policy]
    owner = api_a.get(url)
    assert owner.status_code == 200
    assert [p["id"] for p in owner.json()["results"]] == [policy.pk]
