"""The registry admin: pages load, tenancy holds, writes go through the services."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from registry.models import (
    Agency,
    AIModel,
    Dataset,
    DatasetRole,
    DatasetVersion,
    Licence,
    Membership,
    ModelVersion,
    ModelVersionDataset,
    Visibility,
)
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    LicenceFactory,
    ModelVersionFactory,
)
from tests.registry.api_catalogue import _fast_password_hashing  # noqa: F401


@dataclass
class Rows:
    """One object of every kind in agency A, and the same in agency B."""

    licence: Licence
    dataset_a: Dataset
    dataset_b: Dataset
    dataset_version_a: DatasetVersion
    dataset_version_b: DatasetVersion
    model_a: AIModel
    model_b: AIModel
    released_a: ModelVersion
    draft_a: ModelVersion
    version_b: ModelVersion
    link_a: ModelVersionDataset


@pytest.fixture
def rows(agency_a, agency_b, member_a, member_b):
    licence = LicenceFactory()
    dataset_a = DatasetFactory(agency=agency_a, slug="data-a", created_by=member_a)
    dataset_b = DatasetFactory(agency=agency_b, slug="data-b", created_by=member_b)
    dataset_version_a = DatasetVersionFactory(
        dataset=dataset_a, licence=licence, created_by=member_a
    )
    dataset_version_b = DatasetVersionFactory(
        dataset=dataset_b, licence=licence, created_by=member_b
    )
    model_a = AIModelFactory(agency=agency_a, slug="model-a", created_by=member_a)
    model_b = AIModelFactory(agency=agency_b, slug="model-b", created_by=member_b)
    released_a = ModelVersionFactory(
        model=model_a,
        version="1.0.0",
        licence=licence,
        created_by=member_a,
        released_at=timezone.now(),
        artifact_digest="a" * 64,
        parameter_count=156480,
    )
    draft_a = ModelVersionFactory(
        model=model_a, version="1.1.0", licence=licence, created_by=member_a
    )
    version_b = ModelVersionFactory(
        model=model_b, version="1.0.0", licence=licence, created_by=member_b
    )
    link_a = ModelVersionDataset.objects.create(
        model_version=released_a,
        dataset_version=dataset_version_a,
        role=DatasetRole.TRAINING,
    )
    return Rows(
        licence,
        dataset_a,
        dataset_b,
        dataset_version_a,
        dataset_version_b,
        model_a,
        model_b,
        released_a,
        draft_a,
        version_b,
        link_a,
    )


def _staff(user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


@pytest.fixture
def admin_client_as(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def _url(obj_or_model, view: str = "change") -> str:
    meta = obj_or_model._meta
    name = f"admin:{meta.app_label}_{meta.model_name}_{view}"
    if view in ("change", "delete"):
        return reverse(name, args=[obj_or_model.pk])
    return reverse(name)


def _form_data(response) -> dict[str, str]:
    """The POST body that resubmits a change form as shown (inlines untouched)."""
    form = response.context["adminform"].form
    data: dict[str, str] = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(value, bool):
            if value:
                data[name] = "on"
            continue
        if value is None:
            value = ""
        elif isinstance(value, list | dict):
            value = json.dumps(value)
        data[name] = str(field.prepare_value(value) if value != "" else "")
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = str(management[name].value())
    return data


def _changelist_pks(response) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


# --- as a superuser ----------------------------------------------------------------


def _every_object(rows: Rows, agency_a, member_a):
    return [
        agency_a,
        Membership.objects.get(user=member_a),
        rows.licence,
        rows.dataset_a,
        rows.dataset_version_a,
        rows.model_a,
        rows.released_a,
        rows.draft_a,
        rows.link_a,
    ]


def test_every_changelist_and_change_page_loads_for_a_superuser(
    rows, agency_a, member_a, platform_admin, admin_client_as
):
    client = admin_client_as(platform_admin)

    for obj in _every_object(rows, agency_a, member_a):
        listing = client.get(_url(obj, "changelist"))
        assert listing.status_code == 200, obj._meta.model_name
        assert obj.pk in _changelist_pks(listing)
        page = client.get(_url(obj))
        assert page.status_code == 200, obj._meta.model_name


@pytest.mark.parametrize(
    "model", [Agency, Membership, Licence, DatasetVersion, ModelVersion]
)
def test_add_pages_load_for_a_superuser(model, platform_admin, admin_client_as):
    response = admin_client_as(platform_admin).get(_url(model, "add"))

    assert response.status_code == 200


def test_computed_fields_are_shown_read_only(rows, platform_admin, admin_client_as):
    response = admin_client_as(platform_admin).get(_url(rows.released_a))

    form = response.context["adminform"].form
    for field in (
        "artifact_digest",
        "parameter_count",
        "released_at",
        "created_by",
        "opsets",
    ):
        assert field not in form.fields
        assert field in response.context["adminform"].readonly_fields
    assert "a" * 64 in response.content.decode()


def test_nothing_in_the_catalogue_can_be_deleted(
    rows, agency_a, member_a, platform_admin, admin_client_as
):
    client = admin_client_as(platform_admin)

    for obj in _every_object(rows, agency_a, member_a):
        if isinstance(obj, Membership):
            continue  # removed through its service, not retired
        page = client.get(_url(obj))
        assert 'class="deletelink"' not in page.content.decode(), obj
        assert client.get(_url(obj, "delete")).status_code == 403, obj
        listing = client.get(_url(obj, "changelist"))
        assert "delete_selected" not in listing.content.decode(), obj
    assert Dataset.objects.filter(pk=rows.dataset_a.pk).exists()


def test_released_model_versions_and_dataset_versions_are_read_only(
    rows, platform_admin, admin_client_as
):
    client = admin_client_as(platform_admin)

    for obj in (rows.released_a, rows.dataset_version_a):
        page = client.get(_url(obj))
        assert page.context["has_change_permission"] is False
        assert 'name="_save"' not in page.content.decode()
        response = client.post(_url(obj), {"licence": rows.licence.pk})
        assert response.status_code == 403
    draft = client.get(_url(rows.draft_a))
    assert draft.context["has_change_permission"] is True


# --- tenancy for agency staff -------------------------------------------------


@pytest.mark.parametrize(
    ("model", "own", "other"),
    [
        (Dataset, "dataset_a", "dataset_b"),
        (DatasetVersion, "dataset_version_a", "dataset_version_b"),
        (AIModel, "model_a", "model_b"),
        (ModelVersion, "released_a", "version_b"),
    ],
)
def test_c7_agency_staff_see_only_their_agencys_objects(
    rows, maintainer_a, admin_client_as, model, own, other
):
    client = admin_client_as(_staff(maintainer_a))

    listing = client.get(_url(model, "changelist"))

    assert listing.status_code == 200
    assert getattr(rows, own).pk in _changelist_pks(listing)
    assert getattr(rows, other).pk not in _changelist_pks(listing)
    response = client.get(_url(getattr(rows, other)))
    assert response.status_code in (302, 404)
    if response.status_code == 302:
        assert response.url == reverse("admin:index")


def test_c7_agency_staff_see_only_their_agency_and_people(
    rows, agency_a, agency_b, maintainer_a, member_b, admin_client_as
):
    client = admin_client_as(_staff(maintainer_a))

    agencies = client.get(_url(Agency, "changelist"))
    people = client.get(_url(Membership, "changelist"))

    assert _changelist_pks(agencies) == {agency_a.pk}
    assert Membership.objects.get(user=member_b).pk not in _changelist_pks(people)
    assert client.get(_url(agency_b)).status_code in (302, 404)


def test_a_public_model_of_another_agency_is_visible_but_not_changeable(
    rows, member_b, admin_client_as
):
    AIModel.objects.filter(pk=rows.model_a.pk).update(visibility=Visibility.PUBLIC)
    client = admin_client_as(_staff(member_b))

    page = client.get(_url(rows.released_a))

    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    # The public version's private training data stays out of sight.
    inline = page.context["inline_admin_formsets"][0].formset
    assert list(inline.queryset) == []
    assert str(rows.dataset_version_a) not in page.content.decode()


def test_staff_without_a_membership_see_no_registry(rows, admin_client_as):
    from tests.factories import UserFactory

    outsider = UserFactory(username="outsider", is_staff=True)
    client = admin_client_as(outsider)

    assert client.get(_url(Dataset, "changelist")).status_code == 403


# --- writes through the services -----------------------------------------------


def test_a_maintainer_renames_a_dataset_through_the_service(
    rows, maintainer_a, admin_client_as
):
    client = admin_client_as(_staff(maintainer_a))
    data = _form_data(client.get(_url(rows.dataset_a)))
    data["name"] = "Renamed in the admin"

    response = client.post(_url(rows.dataset_a), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    rows.dataset_a.refresh_from_db()
    assert rows.dataset_a.name == "Renamed in the admin"
    event = AuditEvent.objects.get(action="dataset.updated")
    assert event.actor == maintainer_a
    assert json.loads(event.payload)["changed"]["name"]["to"] == "Renamed in the admin"


def test_a_member_may_not_change_a_dataset(rows, member_a, admin_client_as):
    client = admin_client_as(_staff(member_a))

    page = client.get(_url(rows.dataset_a))
    response = client.post(_url(rows.dataset_a), {"name": "x", "description": ""})

    assert page.context["has_change_permission"] is False
    assert response.status_code == 403


def test_a_member_registers_a_model_version_through_the_service(
    rows, member_a, admin_client_as
):
    client = admin_client_as(_staff(member_a))
    data = _form_data(client.get(_url(ModelVersion, "add")))
    data.update(
        model=str(rows.model_a.pk),
        version="2.0.0",
        licence=str(rows.licence.pk),
        base_version=str(rows.released_a.pk),
        derivation="fine-tuned",
        limitations="Drafts only.",
    )

    response = client.post(_url(ModelVersion, "add"), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    created = ModelVersion.objects.get(model=rows.model_a, version="2.0.0")
    assert created.created_by == member_a
    assert created.base_version == rows.released_a
    assert AuditEvent.objects.filter(
        action="model_version.created", object_id=str(created.pk)
    ).exists()


def test_a_service_refusal_is_a_form_error_and_writes_nothing(
    rows, member_a, admin_client_as
):
    client = admin_client_as(_staff(member_a))
    data = _form_data(client.get(_url(ModelVersion, "add")))
    data.update(
        model=str(rows.model_a.pk),
        version="3.0.0",
        licence=str(rows.licence.pk),
        derivation="fine-tuned",
    )
    events = AuditEvent.objects.count()

    response = client.post(_url(ModelVersion, "add"), data)

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["base_version"] == ["A derivation needs a base version."]
    assert form["version"].value() == "3.0.0"
    assert not ModelVersion.objects.filter(version="3.0.0").exists()
    assert AuditEvent.objects.count() == events


def test_a_refusal_without_a_field_is_shown_above_the_form(
    rows, maintainer_a, admin_client_as
):
    client = admin_client_as(_staff(maintainer_a))
    own = Membership.objects.get(user=maintainer_a)
    data = _form_data(client.get(_url(own)))
    data["role"] = "member"

    response = client.post(_url(own), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "Nobody changes their own role."
    ]
    own.refresh_from_db()
    assert own.role == "maintainer"


def test_a_superuser_registers_an_agency_and_a_licence_through_the_services(
    platform_admin, admin_client_as
):
    client = admin_client_as(platform_admin)

    agency = client.post(
        _url(Agency, "add"),
        {
            "name": "Port Authority",
            "slug": "port",
            "jurisdiction": "NL",
            "contact_name": "",
            "contact_email": "",
            "description": "",
        },
    )
    licence = client.post(_url(Licence, "add"), {"expression": "apache-2.0"})

    assert agency.status_code == 302
    assert licence.status_code == 302
    assert Agency.objects.get(slug="port").jurisdiction == "NL"
    registered = Licence.objects.get(expression="Apache-2.0")
    assert registered.is_osi_approved is True
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"agency.created", "licence.registered"} <= actions
    # Spelled differently, the same licence: the service, not the form, knows.
    again = client.post(_url(Licence, "add"), {"expression": "APACHE-2.0"})
    assert again.status_code == 200
    assert again.context["adminform"].form.errors["expression"] == [
        "Apache-2.0 is already registered."
    ]
    assert Licence.objects.count() == 1


def test_a_membership_is_removed_through_its_service(
    rows, member_a, platform_admin, admin_client_as
):
    membership = Membership.objects.get(user=member_a)
    client = admin_client_as(platform_admin)

    response = client.post(_url(membership, "delete"), {"post": "yes"})

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert AuditEvent.objects.filter(action="membership.removed").exists()
