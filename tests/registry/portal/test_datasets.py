"""Dataset pages: list, datasheet, registering, attaching to a model version."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from registry.models import (
    Dataset,
    DatasetVersion,
    ModelVersionDataset,
    PersonalData,
    Visibility,
)
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    ModelVersionFactory,
)
from tests.registry.portal.conftest import queries, signed_in

pytestmark = pytest.mark.django_db

DATASHEET = {
    "version": "1.0.0",
    "licence": "cc-by-4.0",
    "motivation": "Answer residents' questions.",
    "composition": "18,000 question and answer pairs.",
    "collection_process": "Contact-centre logs, 2024-2025.",
    "intended_uses": "Fine-tuning service assistants.",
    "languages": "fr, en",
    "record_count": "18000",
    "origin_jurisdiction": "FR",
    "personal_data": "none",
}


@pytest.fixture
def dataset_a(agency_a, member_a):
    return DatasetFactory(agency=agency_a, name="Service questions", slug="questions")


@pytest.fixture
def private_b(agency_b, member_b):
    dataset = DatasetFactory(agency=agency_b, name="Hidden records", slug="hidden")
    return DatasetVersionFactory(dataset=dataset, version="3.0.0")


def test_anonymous_readers_are_sent_to_sign_in(dataset_a):
    for url in (
        "/portal/datasets/",
        f"/portal/datasets/{dataset_a.pk}/",
        "/portal/datasets/new/",
        f"/portal/datasets/{dataset_a.pk}/versions/new/",
    ):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/"), url


def test_c1_another_agencys_private_dataset_is_not_found(member_a, private_b):
    client = signed_in(member_a)
    assert "Hidden records" not in client.get("/portal/datasets/").content.decode()
    assert client.get(f"/portal/datasets/{private_b.dataset.pk}/").status_code == 404
    assert client.get(f"/portal/dataset-versions/{private_b.pk}/").status_code == 404
    url = f"/portal/datasets/{private_b.dataset.pk}/versions/new/"
    assert client.post(url, DATASHEET).status_code == 404


def test_datasheet_page_is_readable(member_a, dataset_a):
    dv = DatasetVersionFactory(
        dataset=dataset_a,
        personal_data=PersonalData.PSEUDONYMISED,
        legal_basis="GDPR Art. 6(1)(e): public task.",
        preprocessing="Names removed.",
    )
    model_version = ModelVersionFactory(model__agency=dataset_a.agency)
    ModelVersionDataset.objects.create(
        model_version=model_version, dataset_version=dv, role="training"
    )
    page = signed_in(member_a).get(f"/portal/dataset-versions/{dv.pk}/")
    text = page.content.decode()
    assert "Pseudonymised" in text and "GDPR Art. 6(1)(e)" in text
    assert dv.motivation.replace("'", "&#x27;") in text and "Names removed." in text
    assert f"/portal/versions/{model_version.pk}/" in text  # who used it
    assert "{" not in text.split("<main", 1)[1].split("</main>")[0]  # no raw JSON


def test_member_registers_a_dataset_and_a_version(member_a):
    client = signed_in(member_a)
    response = client.post(
        "/portal/datasets/new/", {"name": "Letters", "slug": "letters"}
    )
    dataset = Dataset.objects.get(slug="letters")
    assert response["Location"] == f"/portal/datasets/{dataset.pk}/"
    assert AuditEvent.objects.filter(action="dataset.created").exists()
    response = client.post(f"/portal/datasets/{dataset.pk}/versions/new/", DATASHEET)
    dv = DatasetVersion.objects.get(dataset=dataset)
    assert response["Location"] == f"/portal/dataset-versions/{dv.pk}/"
    assert dv.languages == ["fr", "en"] and dv.record_count == 18000
    assert dv.licence.expression == "CC-BY-4.0"
    assert AuditEvent.objects.filter(
        action="dataset_version.created", object_id=str(dv.pk)
    ).exists()


def test_personal_data_without_legal_basis_is_refused_on_the_field(member_a, dataset_a):
    response = signed_in(member_a).post(
        f"/portal/datasets/{dataset_a.pk}/versions/new/",
        {**DATASHEET, "personal_data": "personal", "languages": "fr, not a tag!"},
    )
    text = response.content.decode()
    assert response.status_code == 400
    assert "needs a legal basis" in text
    assert not DatasetVersion.objects.filter(dataset=dataset_a).exists()


def test_reviewers_do_not_register_datasets(reviewer, dataset_a):
    client = signed_in(reviewer)
    assert client.get("/portal/datasets/new/").status_code == 403
    assert (
        client.post("/portal/datasets/new/", {"name": "x", "slug": "x"}).status_code
        == 403
    )
    assert client.get(f"/portal/datasets/{dataset_a.pk}/").status_code == 200


def test_dataset_list_queries_do_not_grow(member_a, agency_a):
    client = signed_in(member_a)

    def grow(upto):
        for n in range(Dataset.objects.count(), upto):
            dataset = DatasetFactory(agency=agency_a)
            DatasetVersionFactory(dataset=dataset, version=f"1.0.{n}")

    grow(2)
    small = queries(client, "/portal/datasets/")
    grow(20)
    assert queries(client, "/portal/datasets/") == small <= 8


def test_attach_a_dataset_to_a_version(member_a, dataset_a, private_b):
    version = ModelVersionFactory(model__agency=dataset_a.agency)
    dv = DatasetVersionFactory(dataset=dataset_a)
    client = signed_in(member_a)
    url = f"/portal/versions/{version.pk}/datasets/"
    form = client.get(url).content.decode()
    assert str(dv) in form and "hidden@3.0.0" not in form
    response = client.post(url, {"dataset_version": dv.pk, "role": "evaluation"})
    assert response.status_code == 302
    assert response["Location"] == f"/portal/versions/{version.pk}/#datasets"
    assert list(version.dataset_links.values_list("dataset_version", "role")) == [
        (dv.pk, "evaluation")
    ]
    assert AuditEvent.objects.filter(
        action="model_version.updated", object_id=str(version.pk)
    ).exists()
    # A second dataset keeps the first one.
    other = DatasetVersionFactory(dataset=dataset_a, version="2.0.0")
    client.post(url, {"dataset_version": other.pk, "role": "training"})
    assert version.dataset_links.count() == 2
    # Another agency's private dataset version is not a choice.
    refused = client.post(url, {"dataset_version": private_b.pk, "role": "training"})
    assert refused.status_code == 400
    assert version.dataset_links.count() == 2


def test_attaching_to_a_released_version_is_refused_readably(member_a, dataset_a):
    version = ModelVersionFactory(
        model__agency=dataset_a.agency, released_at=timezone.now()
    )
    dv = DatasetVersionFactory(dataset=dataset_a)
    response = signed_in(member_a).post(
        f"/portal/versions/{version.pk}/datasets/",
        {"dataset_version": dv.pk, "role": "training"},
    )
    assert response.status_code == 400
    assert "Released content is immutable" in response.content.decode()
    assert not version.dataset_links.exists()


def test_attach_is_for_the_owning_agency(member_b, member_a, dataset_a):
    private = ModelVersionFactory(model__agency=dataset_a.agency)
    public = ModelVersionFactory(
        model=AIModelFactory(agency=dataset_a.agency, visibility=Visibility.PUBLIC)
    )
    client = signed_in(member_b)
    assert client.get(f"/portal/versions/{private.pk}/datasets/").status_code == 404
    assert client.get(f"/portal/versions/{public.pk}/datasets/").status_code == 403
