"""The models pages: list, model page, registering a model and a version."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditEvent
from registry.models import AIModel, ModelVersion, Visibility
from tests.factories import AIModelFactory, ModelVersionFactory
from tests.registry.portal.conftest import queries, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def model_a(agency_a, member_a):
    return AIModelFactory(agency=agency_a, name="Reply assistant", slug="reply")


@pytest.fixture
def private_b(agency_b, member_b):
    return AIModelFactory(agency=agency_b, name="Secret tool", slug="secret")


def test_anonymous_readers_are_sent_to_sign_in(model_a):
    client = Client()
    for url in (
        "/portal/models/",
        f"/portal/models/{model_a.pk}/",
        "/portal/models/new/",
        f"/portal/models/{model_a.pk}/versions/new/",
    ):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next="), url


def test_list_shows_own_and_public_models_but_not_others_private(
    member_a, model_a, private_b, agency_b
):
    public_b = AIModelFactory(
        agency=agency_b, name="Open helper", visibility=Visibility.PUBLIC
    )
    ModelVersionFactory(model=model_a, version="1.0.0", status="approved")
    page = signed_in(member_a).get("/portal/models/").content.decode()
    assert "Reply assistant" in page
    assert public_b.name in page
    assert "Secret tool" not in page
    assert "Approved" in page  # the latest version's status, as a word


def test_list_filters_by_search_task_status_and_owner(member_a, model_a, agency_b):
    AIModelFactory(
        agency=agency_b, name="Open classifier", task="text-classification",
        visibility=Visibility.PUBLIC,
    )  # fmt: skip
    ModelVersionFactory(model=model_a, status="in_review")
    client = signed_in(member_a)
    assert (
        "Open classifier" not in client.get("/portal/models/?q=reply").content.decode()
    )
    by_task = client.get("/portal/models/?task=text-classification").content.decode()
    assert "Open classifier" in by_task and "Reply assistant" not in by_task
    by_status = client.get("/portal/models/?status=in_review").content.decode()
    assert "Reply assistant" in by_status and "Open classifier" not in by_status
    mine = client.get("/portal/models/?owner=mine").content.decode()
    assert "Reply assistant" in mine and "Open classifier" not in mine


def test_list_paginates(member_a, agency_a):
    for n in range(25):
        AIModelFactory(agency=agency_a, name=f"Model {n:02d}")
    client = signed_in(member_a)
    first = client.get("/portal/models/").content.decode()
    assert "Page 1 of 2" in first and "Model 19" in first and "Model 20" not in first
    assert "Model 24" in client.get("/portal/models/?page=2").content.decode()


def test_list_queries_do_not_grow_with_the_catalogue(member_a, agency_a):
    def grow(upto):
        for n in range(AIModel.objects.count(), upto):
            model = AIModelFactory(agency=agency_a)
            ModelVersionFactory(model=model, version=f"1.0.{n}")
            ModelVersionFactory(model=model, version=f"2.0.{n}")

    client = signed_in(member_a)
    grow(2)
    small = queries(client, "/portal/models/")
    grow(20)
    assert queries(client, "/portal/models/") == small <= 8


def test_model_page_queries_do_not_grow(member_a, model_a):
    client = signed_in(member_a)
    url = f"/portal/models/{model_a.pk}/"
    for n in range(2):
        ModelVersionFactory(model=model_a, version=f"1.{n}.0")
    small = queries(client, url)
    for n in range(2, 20):
        ModelVersionFactory(model=model_a, version=f"1.{n}.0")
    assert queries(client, url) == small <= 9


def test_c1_another_agencys_private_model_is_not_found(member_a, private_b):
    client = signed_in(member_a)
    assert client.get(f"/portal/models/{private_b.pk}/").status_code == 404
    response = client.get(f"/portal/models/{private_b.pk}/versions/new/")
    assert response.status_code == 404


def test_model_page_shows_versions_and_licences(member_a, model_a):
    ModelVersionFactory(model=model_a, version="1.2.0", licence__expression="MIT")
    page = signed_in(member_a).get(f"/portal/models/{model_a.pk}/").content.decode()
    assert "1.2.0" in page and "MIT" in page
    assert model_a.intended_use in page
    assert "Register a version" in page


def test_member_registers_a_model_through_the_service(member_a):
    response = signed_in(member_a).post(
        "/portal/models/new/",
        {
            "name": "Letters helper", "slug": "letters", "task": "text-generation",
            "intended_use": "Drafting replies to letters.",
        },
    )  # fmt: skip
    model = AIModel.objects.get(slug="letters")
    assert response.status_code == 302
    assert response["Location"] == f"/portal/models/{model.pk}/"
    assert model.agency == member_a.membership.agency
    assert model.visibility == Visibility.PRIVATE
    assert AuditEvent.objects.filter(
        action="model.created", object_id=str(model.pk)
    ).exists()


def test_model_form_shows_validation_and_service_errors(member_a, model_a):
    client = signed_in(member_a)
    missing = client.post("/portal/models/new/", {"name": "X", "slug": "x"})
    assert missing.status_code == 400
    assert "There is a problem" in missing.content.decode()
    assert "This field is required." in missing.content.decode()
    duplicate = client.post(
        "/portal/models/new/",
        {"name": "Again", "slug": "reply", "task": "other", "intended_use": "x"},
    )
    assert duplicate.status_code == 400
    assert "already has a model with this slug" in duplicate.content.decode()
    assert AIModel.objects.filter(slug="reply").count() == 1


def test_reviewers_read_but_do_not_register(reviewer, model_a):
    client = signed_in(reviewer)
    assert client.get(f"/portal/models/{model_a.pk}/").status_code == 200
    assert (
        "Register a version"
        not in client.get(f"/portal/models/{model_a.pk}/").content.decode()
    )
    assert client.get("/portal/models/new/").status_code == 403
    assert (
        client.post(
            "/portal/models/new/",
            {"name": "N", "slug": "n", "task": "other", "intended_use": "x"},
        ).status_code
        == 403
    )
    assert client.get(f"/portal/models/{model_a.pk}/versions/new/").status_code == 403
    assert not AIModel.objects.filter(slug="n").exists()


@pytest.mark.parametrize("person", ["member_a", "maintainer_a"])
def test_members_and_maintainers_register_a_version(person, request, model_a):
    user = request.getfixturevalue(person)
    response = signed_in(user).post(
        f"/portal/models/{model_a.pk}/versions/new/",
        {
            "version": "1.0.0", "licence": "apache-2.0 or mit",
            "hosting_jurisdiction": "FR", "limitations": "French only.",
            "training_energy_kwh": "12.5",
        },
    )  # fmt: skip
    version = ModelVersion.objects.get(model=model_a, version="1.0.0")
    assert response.status_code == 302
    assert response["Location"] == f"/portal/versions/{version.pk}/"
    assert version.licence.expression == "Apache-2.0 OR MIT"
    assert str(version.training_energy_kwh) == "12.500"
    assert AuditEvent.objects.filter(
        action="model_version.created", object_id=str(version.pk)
    ).exists()


def test_version_form_shows_licence_and_rule_errors(member_a, model_a):
    client = signed_in(member_a)
    bad = client.post(
        f"/portal/models/{model_a.pk}/versions/new/",
        {"version": "1.0.0", "licence": "Not-A-Licence"},
    )
    assert bad.status_code == 400
    assert "Not-A-Licence" in bad.content.decode()
    no_base = client.post(
        f"/portal/models/{model_a.pk}/versions/new/",
        {"version": "one", "licence": "MIT", "derivation": "fine-tuned"},
    )
    text = no_base.content.decode()
    assert no_base.status_code == 400
    assert "A derivation needs a base version." in text
    assert not ModelVersion.objects.filter(model=model_a).exists()


def test_another_agencys_member_cannot_register_a_version_of_a_public_model(
    member_b, model_a
):
    AIModel.objects.filter(pk=model_a.pk).update(visibility=Visibility.PUBLIC)
    client = signed_in(member_b)
    assert client.get(f"/portal/models/{model_a.pk}/").status_code == 200
    response = client.post(
        f"/portal/models/{model_a.pk}/versions/new/",
        {"version": "9.0.0", "licence": "MIT"},
    )
    assert response.status_code == 403
    assert not ModelVersion.objects.filter(version="9.0.0").exists()


def test_only_maintainers_edit_a_model_as_the_api_decides(
    member_a, maintainer_a, model_a
):
    url = f"/portal/models/{model_a.pk}/edit/"
    change = {
        "name": "Reply assistant", "task": "text-generation",
        "intended_use": "Drafting replies to residents, read by staff.",
    }  # fmt: skip
    member = signed_in(member_a)
    assert (
        "Edit the description"
        not in member.get(f"/portal/models/{model_a.pk}/").content.decode()
    )
    assert member.get(url).status_code == 403
    assert member.post(url, change).status_code == 403
    model_a.refresh_from_db()
    assert model_a.intended_use != change["intended_use"]
    maintainer = signed_in(maintainer_a)
    assert maintainer.get(url).status_code == 200
    response = maintainer.post(url, change)
    assert response["Location"] == f"/portal/models/{model_a.pk}/"
    model_a.refresh_from_db()
    assert model_a.intended_use == change["intended_use"]
    assert AuditEvent.objects.filter(
        action="model.updated", object_id=str(model_a.pk)
    ).exists()
