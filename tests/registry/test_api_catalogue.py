"""The catalogue API end to end: writes, validation, immutability, filters, queries."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from registry.models import (
    AIModel,
    Dataset,
    DatasetVersion,
    Licence,
    ModelVersion,
    Visibility,
)
from tests.factories import (
    AIModelFactory,
    DatasetVersionFactory,
    LicenceFactory,
    ModelVersionFactory,
)
from tests.registry.api_catalogue import (  # noqa: F401
    _fast_password_hashing,
    build_catalogue,
)

API = "/api/v1"


@pytest.fixture
def cat(agency_a, agency_b, member_a, member_b):
    return build_catalogue(agency_a, agency_b, member_a, member_b)


def field_codes(response, field: str) -> list[str]:
    body = response.json()
    assert set(body) >= {"code", "message", "fields"}, body
    return [error["code"] for error in body["fields"][field]]


DATASHEET = {
    "version": "2.0.0",
    "licence": "apache-2.0",
    "motivation": "Answer citizens' questions.",
    "composition": "Question and answer pairs.",
    "collection_process": "Contact-centre logs.",
    "intended_uses": "Fine-tuning assistants.",
    "languages": ["fr", "en"],
    "record_count": 1800,
    "origin_jurisdiction": "FR",
}


# --- licences ------------------------------------------------------------------


def test_licence_register_normalises_and_is_idempotent(api_a):
    first = api_a.post(
        f"{API}/licences/", {"expression": "apache-2.0 or mit"}, format="json"
    )
    assert first.status_code == 201, first.content
    assert first.json()["expression"] == "Apache-2.0 OR MIT"
    assert first.json()["created"] is True
    again = api_a.post(
        f"{API}/licences/", {"expression": "Apache-2.0 OR MIT"}, format="json"
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["created"] is False


def test_licence_register_names_unknown_identifiers(api_a):
    response = api_a.post(
        f"{API}/licences/", {"expression": "MIT OR frobnicate-2.0"}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_licence"
    assert "frobnicate-2.0" in body["message"]
    assert "frobnicate-2.0" in body["fields"]["expression"][0]["message"]


# --- JSON only -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/licences/", "/datasets/", "/models/", "/model-versions/"]
)
def test_json_endpoints_refuse_other_content_types_with_415(api_a, path):
    response = api_a.post(f"{API}{path}", {"expression": "MIT", "name": "x"})
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_json_bodies_over_the_cap_answer_413(api_a, cat):
    response = api_a.post(
        f"{API}/models/",
        {"name": "x", "slug": "x", "task": "other", "intended_use": "x" * 1_100_000},
        format="json",
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


# --- datasets and their versions -----------------------------------------------


def test_dataset_and_version_registration(api_a, cat, member_a):
    created = api_a.post(
        f"{API}/datasets/",
        {"name": "Service questions", "slug": "service-questions"},
        format="json",
    )
    assert created.status_code == 201, created.content
    dataset = created.json()
    assert dataset["agency"]["slug"] == "city-a"
    assert dataset["visibility"] == "private"
    assert dataset["created_by"] == "alice"
    version = api_a.post(
        f"{API}/dataset-versions/",
        {**DATASHEET, "dataset": dataset["id"]},
        format="json",
    )
    assert version.status_code == 201, version.content
    body = version.json()
    assert body["licence"]["expression"] == "Apache-2.0"
    assert body["languages"] == ["fr", "en"]
    assert body["artifact_state"] == "none"
    assert AuditEvent.objects.filter(action="dataset_version.created").count() == 1


def test_c3_dataset_version_of_another_agencys_dataset_does_not_exist(api_a, cat):
    response = api_a.post(
        f"{API}/dataset-versions/",
        {**DATASHEET, "dataset": cat.dataset_b.pk},
        format="json",
    )
    assert response.status_code == 400
    assert field_codes(response, "dataset") == ["does_not_exist"]


def test_dataset_version_on_a_public_dataset_of_another_agency_is_forbidden(api_a, cat):
    response = api_a.post(
        f"{API}/dataset-versions/",
        {**DATASHEET, "dataset": cat.public_dataset_b.pk},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_personal_data_without_legal_basis_is_a_field_error(api_a, cat):
    response = api_a.post(
        f"{API}/dataset-versions/",
        {**DATASHEET, "dataset": cat.dataset_a.pk, "personal_data": "personal"},
        format="json",
    )
    assert response.status_code == 400
    assert field_codes(response, "legal_basis") == ["required"]


def test_dataset_version_needs_a_registered_licence(api_a, cat):
    response = api_a.post(
        f"{API}/dataset-versions/",
        {**DATASHEET, "dataset": cat.dataset_a.pk, "licence": "cc-by-4.0"},
        format="json",
    )
    assert response.status_code == 400
    assert field_codes(response, "licence") == ["not_registered"]
    assert "CC-BY-4.0" in response.json()["fields"]["licence"][0]["message"]
    unknown = api_a.post(
        f"{API}/dataset-versions/",
        {**DATASHEET, "dataset": cat.dataset_a.pk, "licence": "nonsense-9"},
        format="json",
    )
    assert "nonsense-9" in unknown.json()["fields"]["licence"][0]["message"]


def test_dataset_version_duplicate_is_409_with_field(api_a, cat):
    response = api_a.post(
        f"{API}/dataset-versions/",
        {**DATASHEET, "version": "1.0.0", "dataset": cat.dataset_a.pk},
        format="json",
    )
    assert response.status_code == 409
    assert field_codes(response, "version") == ["unique"]


def test_c6_dataset_mass_assignment_is_ignored(api_a, agency_b, member_b):
    response = api_a.post(
        f"{API}/datasets/",
        {
            "name": "D",
            "slug": "d",
            "agency": agency_b.pk,
            "visibility": "public",
            "created_by": member_b.pk,
        },
        format="json",
    )
    assert response.status_code == 201
    dataset = Dataset.objects.get(slug="d")
    assert dataset.agency.slug == "city-a"
    assert dataset.visibility == Visibility.PRIVATE
    assert dataset.created_by.username == "alice"


def test_c6_dataset_version_mass_assignment_is_ignored(api_a, cat):
    response = api_a.post(
        f"{API}/dataset-versions/",
        {
            **DATASHEET,
            "dataset": cat.dataset_a.pk,
            "digest": "a" * 64,
            "artifact_state": "available",
            "storage_key": "../../etc/passwd",
        },
        format="json",
    )
    assert response.status_code == 201
    version = DatasetVersion.objects.get(pk=response.json()["id"])
    assert (version.digest, version.artifact_state, version.storage_key) == (
        "",
        "none",
        "",
    )


def test_c6_dataset_update_cannot_make_it_public(api_maintainer_a, cat):
    url = f"{API}/datasets/{cat.dataset_a.pk}/"
    refused = api_maintainer_a.patch(url, {"visibility": "public"}, format="json")
    assert refused.status_code == 400
    assert field_codes(refused, "visibility") == ["read_only"]
    renamed = api_maintainer_a.patch(url, {"name": "Renamed"}, format="json")
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Renamed"


# --- models --------------------------------------------------------------------


def test_model_create_and_maintainer_update(api_a, api_maintainer_a, agency_b):
    created = api_a.post(
        f"{API}/models/",
        {
            "name": "Reply assistant",
            "slug": "reply-assistant",
            "task": "text-generation",
            "intended_use": "Drafting replies, reviewed by staff.",
            "agency": agency_b.pk,
            "visibility": "public",
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    model_id = created.json()["id"]
    model = AIModel.objects.get(pk=model_id)
    assert (model.agency.slug, model.visibility) == ("city-a", "private")
    url = f"{API}/models/{model_id}/"
    by_member = api_a.patch(url, {"description": "x"}, format="json")
    assert by_member.status_code == 403
    by_maintainer = api_maintainer_a.patch(
        url, {"description": "Drafts replies.", "agency": agency_b.pk}, format="json"
    )
    assert by_maintainer.status_code == 200
    assert by_maintainer.json()["description"] == "Drafts replies."
    assert by_maintainer.json()["agency"]["slug"] == "city-a"


@pytest.mark.parametrize(
    ("change", "field"),
    [({"slug": "renamed"}, "slug"), ({"visibility": "public"}, "visibility")],
)
def test_model_slug_and_visibility_are_fixed(api_maintainer_a, cat, change, field):
    response = api_maintainer_a.patch(
        f"{API}/models/{cat.model_a.pk}/", change, format="json"
    )
    assert response.status_code == 400
    assert field_codes(response, field) == ["read_only"]
    cat.model_a.refresh_from_db()
    assert (cat.model_a.slug, cat.model_a.visibility) == ("alpha-model", "private")


def test_model_slug_unique_per_agency_is_409(api_a, cat):
    response = api_a.post(
        f"{API}/models/",
        {"name": "x", "slug": "alpha-model", "task": "other", "intended_use": "x"},
        format="json",
    )
    assert response.status_code == 409
    assert field_codes(response, "slug") == ["unique"]


# --- model versions ------------------------------------------------------------


def version_body(cat, **extra):
    return {
        "model": cat.model_a.pk,
        "version": "1.1.0",
        "licence": "Apache-2.0",
        **extra,
    }


def test_model_version_create_with_lineage(api_a, cat):
    response = api_a.post(
        f"{API}/model-versions/",
        version_body(
            cat,
            base_version=cat.public_version_b.pk,
            derivation="fine-tuned",
            datasets=[
                {"dataset_version": cat.dataset_version_a.pk, "role": "fine-tuning"},
                {
                    "dataset_version": cat.public_dataset_version_b.pk,
                    "role": "evaluation",
                },
            ],
            training_energy_kwh="12.500",
            hosting_jurisdiction="FR",
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["base_version"]["id"] == cat.public_version_b.pk
    assert body["base_version"]["agency"] == "region-b"
    assert {(d["dataset_version"], d["role"]) for d in body["datasets"]} == {
        (cat.dataset_version_a.pk, "fine-tuning"),
        (cat.public_dataset_version_b.pk, "evaluation"),
    }
    assert body["training_energy_kwh"] == "12.500"
    assert body["is_released"] is False
    assert body["status"] == "draft"


@pytest.mark.parametrize("field", ["base_version", "datasets", "model"])
def test_c3_references_to_another_agencys_objects_do_not_exist(api_a, cat, field):
    """SECURITY C3: a hidden id is answered like an id that was never used."""
    body = version_body(
        cat, base_version=cat.public_version_b.pk, derivation="fine-tuned"
    )
    if field == "base_version":
        body["base_version"] = cat.version_b.pk
    elif field == "datasets":
        body["datasets"] = [
            {"dataset_version": cat.dataset_version_b.pk, "role": "training"}
        ]
    else:
        body["model"] = cat.model_b.pk
    response = api_a.post(f"{API}/model-versions/", body, format="json")
    assert response.status_code == 400
    assert "does not exist" in str(response.json()["fields"][field])
    assert not ModelVersion.objects.filter(version="1.1.0").exists()


def test_model_version_duplicate_is_409(api_a, cat):
    response = api_a.post(
        f"{API}/model-versions/", version_body(cat, version="1.0.0"), format="json"
    )
    assert response.status_code == 409
    assert response.json()["fields"]["version"][0]["code"] == "unique"


def test_model_version_bad_semver_is_400(api_a, cat):
    response = api_a.post(
        f"{API}/model-versions/", version_body(cat, version="v1"), format="json"
    )
    assert response.status_code == 400
    assert field_codes(response, "version") == ["invalid_version"]


def test_released_model_version_is_immutable(api_a, cat):
    response = api_a.patch(
        f"{API}/model-versions/{cat.version_a.pk}/", {"risks": "new"}, format="json"
    )
    assert response.status_code == 409
    assert response.json() == {
        "code": "version_released",
        "message": "Released content is immutable: register a new version.",
    }


def test_c6_unreleased_version_update_and_mass_assignment(
    api_a, cat, member_a, member_b
):
    draft = ModelVersionFactory(
        model=cat.model_a, version="1.2.0", licence=cat.licence, created_by=member_a
    )
    response = api_a.patch(
        f"{API}/model-versions/{draft.pk}/",
        {
            "risks": "Invented addresses.",
            "released_at": timezone.now().isoformat(),
            "status": "approved",
            "artifact_digest": "b" * 64,
            "parameter_count": 7,
            "created_by": member_b.pk,
            "model": cat.model_b.pk,
            "version": "9.9.9",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    draft.refresh_from_db()
    assert draft.risks == "Invented addresses."
    assert draft.released_at is None
    assert draft.status == "draft"
    assert draft.artifact_digest == ""
    assert draft.parameter_count is None
    assert draft.created_by.username == "alice"
    assert (draft.model_id, draft.version) == (cat.model_a.pk, "1.2.0")


def test_other_agency_cannot_edit_a_public_version(api_a, cat):
    ModelVersion.objects.filter(pk=cat.public_version_b.pk).update(released_at=None)
    response = api_a.patch(
        f"{API}/model-versions/{cat.public_version_b.pk}/",
        {"risks": "x"},
        format="json",
    )
    assert response.status_code == 403


# --- filters, search, ordering -------------------------------------------------


def listing(client, resource, **params):
    response = client.get(f"{API}/{resource}/", params)
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_model_version_filters(api_reviewer, cat):
    small = ModelVersionFactory(
        model=cat.model_a,
        version="1.3.0",
        licence=LicenceFactory(expression="MIT", spdx_ids=["MIT"], name="MIT"),
        parameter_count=5_000_000,
        kind="seq_classifier",
        hosting_jurisdiction="FR",
        training_jurisdiction="DE",
    )
    large = ModelVersionFactory(
        model=cat.model_b,
        version="1.3.0",
        licence=cat.licence,
        parameter_count=900_000_000,
        kind="causal_lm_kv",
        hosting_jurisdiction="DE",
    )
    assert (
        listing(api_reviewer, "model-versions", parameter_count_min=1_000_000_000) == []
    )
    assert listing(api_reviewer, "model-versions", parameter_count_max=10_000_000) == [
        small.pk
    ]
    assert listing(
        api_reviewer,
        "model-versions",
        parameter_count_min=1_000_000,
        parameter_count_max=1_000_000_000,
        kind="causal_lm_kv",
    ) == [large.pk]
    assert listing(api_reviewer, "model-versions", licence="mit") == [small.pk]
    assert set(listing(api_reviewer, "model-versions", jurisdiction="de")) == {
        small.pk,
        large.pk,
    }
    assert listing(api_reviewer, "model-versions", hosting_jurisdiction="FR") == [
        small.pk
    ]
    assert set(listing(api_reviewer, "model-versions", agency="city-a")) == {
        cat.version_a.pk,
        small.pk,
    }
    assert set(listing(api_reviewer, "model-versions", released="false")) == {
        small.pk,
        large.pk,
    }
    assert listing(api_reviewer, "model-versions", task="text-classification") == []


def test_licence_filter_refuses_an_invalid_expression(api_a):
    response = api_a.get(f"{API}/model-versions/", {"licence": "MIT AND"})
    assert response.status_code == 400
    assert "licence" in response.json()["fields"]


def test_dataset_version_filters(api_a, cat):
    personal = DatasetVersionFactory(
        dataset=cat.dataset_a,
        version="3.0.0",
        personal_data="personal",
        legal_basis="GDPR Art. 6(1)(e)",
        languages=["pt-BR"],
        origin_jurisdiction="PT",
        licence=cat.licence,
    )
    assert listing(api_a, "dataset-versions", personal_data="personal") == [personal.pk]
    assert listing(api_a, "dataset-versions", language="pt-BR") == [personal.pk]
    assert listing(api_a, "dataset-versions", jurisdiction="pt") == [personal.pk]
    assert listing(api_a, "datasets", personal_data="personal") == [cat.dataset_a.pk]
    assert set(listing(api_a, "dataset-versions", licence="apache-2.0")) == {
        cat.dataset_version_a.pk,
        cat.public_dataset_version_b.pk,
        personal.pk,
    }


def test_search_and_ordering(api_a, cat, agency_a, member_a):
    AIModelFactory(
        agency=agency_a,
        name="Zoning helper",
        slug="zoning",
        description="Answers planning questions",
        created_by=member_a,
    )
    found = api_a.get(f"{API}/models/", {"search": "planning"}).json()["results"]
    assert [row["slug"] for row in found] == ["zoning"]
    ordered = api_a.get(f"{API}/models/", {"ordering": "name"}).json()["results"]
    names = [row["name"] for row in ordered]
    assert names == sorted(names)


def test_cursor_pagination(api_reviewer, cat):
    first = api_reviewer.get(f"{API}/models/", {"page_size": 2}).json()
    assert len(first["results"]) == 2
    second = api_reviewer.get(first["next"]).json()
    seen = [row["id"] for row in first["results"] + second["results"]]
    assert len(seen) == len(set(seen)) == 3
    assert second["next"] is None


# --- query count ---------------------------------------------------------------


def test_model_version_list_has_a_constant_number_of_queries(api_a, agency_a, member_a):
    licence = Licence.objects.create(expression="MIT", spdx_ids=["MIT"])
    base_model = AIModelFactory(agency=agency_a, slug="base", created_by=member_a)
    base = ModelVersionFactory(
        model=base_model,
        version="1.0.0",
        licence=licence,
        released_at=timezone.now(),
    )
    datasets = [DatasetVersionFactory(licence=licence, dataset__agency=agency_a)]
    datasets.append(
        DatasetVersionFactory(
            licence=licence, dataset=datasets[0].dataset, version="2.0.0"
        )
    )
    for n in range(60):
        model = AIModelFactory(agency=agency_a, slug=f"m{n}", created_by=member_a)
        version = ModelVersionFactory(
            model=model,
            licence=licence,
            base_version=base,
            derivation="fine-tuned",
            created_by=member_a,
        )
        for dataset_version, role in zip(
            datasets, ("training", "evaluation"), strict=True
        ):
            version.dataset_links.create(dataset_version=dataset_version, role=role)

    def count(page_size: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = api_a.get(f"{API}/model-versions/", {"page_size": page_size})
        assert response.status_code == 200
        rows = response.json()["results"]
        assert len(rows) == page_size
        assert all(len(row["datasets"]) == 2 for row in rows if row["id"] != base.pk)
        return len(queries)

    assert count(10) == count(50)
    assert count(50) <= 6
