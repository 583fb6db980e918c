"""The catalogue services: who may write, the business rules, one audit event each."""

from __future__ import annotations

import pytest
from django.utils import timezone
from knox.models import AuthToken

from audit.models import AuditEvent
from config.exceptions import Conflict, DomainError, PolicyViolation
from registry import licences, services
from registry.models import (
    DatasetVersion,
    Licence,
    Membership,
    ModelVersion,
    PersonalData,
    Role,
    user_role,
)
from tests.factories import (
    DatasetVersionFactory,
    MembershipFactory,
    ModelVersionFactory,
    UserFactory,
)
from tests.registry.api_catalogue import (  # noqa: F401
    _fast_password_hashing,
    build_catalogue,
)


@pytest.fixture
def cat(agency_a, agency_b, member_a, member_b):
    return build_catalogue(agency_a, agency_b, member_a, member_b)


def events(action: str | None = None):
    qs = AuditEvent.objects.order_by("seq")
    return list(qs.filter(action=action) if action else qs)


DATASHEET = {
    "motivation": "Answer questions.",
    "composition": "Pairs.",
    "collection_process": "Written by staff.",
    "intended_uses": "Training.",
    "record_count": 10,
    "origin_jurisdiction": "FR",
}


# --- agencies ------------------------------------------------------------------


def test_agency_create_is_for_platform_admins(platform_admin, maintainer_a):
    with pytest.raises(PolicyViolation):
        services.agency_create(
            actor=maintainer_a, name="New", slug="new", jurisdiction="FR"
        )
    agency = services.agency_create(
        actor=platform_admin, name="New", slug="new", jurisdiction="DE-BY"
    )
    (event,) = events("agency.created")
    assert event.object_id == str(agency.pk)
    assert event.agency_slug == "new"


def test_agency_create_refuses_a_taken_slug_and_a_bad_jurisdiction(
    platform_admin, agency_a
):
    with pytest.raises(Conflict) as caught:
        services.agency_create(
            actor=platform_admin, name="Other", slug="city-a", jurisdiction="FR"
        )
    assert "slug" in caught.value.fields
    with pytest.raises(DomainError) as caught:
        services.agency_create(
            actor=platform_admin, name="Other", slug="other", jurisdiction="France"
        )
    assert "jurisdiction" in caught.value.fields
    assert events() == []


def test_agency_update_by_its_maintainers_only(
    agency_a, maintainer_a, member_a, agency_b
):
    maintainer_b = MembershipFactory(agency=agency_b, role=Role.MAINTAINER).user
    for outsider in (member_a, maintainer_b):
        with pytest.raises(PolicyViolation):
            services.agency_update(actor=outsider, agency=agency_a, name="Renamed")
    services.agency_update(actor=maintainer_a, agency=agency_a, name="Renamed")
    agency_a.refresh_from_db()
    assert agency_a.name == "Renamed"
    (event,) = events("agency.updated")
    assert event.payload_data["changed"]["name"] == {"from": "City A", "to": "Renamed"}


# --- people --------------------------------------------------------------------


def test_maintainer_adds_members_and_maintainers_to_own_agency(agency_a, maintainer_a):
    newcomer = UserFactory(username="newcomer")
    membership = services.membership_add(
        actor=maintainer_a, agency=agency_a, user=newcomer, role=Role.MAINTAINER
    )
    assert membership.role == Role.MAINTAINER
    (event,) = events("membership.added")
    assert event.payload_data == {"user": "newcomer", "role": "maintainer"}


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.ADMIN])
def test_only_platform_admins_grant_reviewer_or_admin(
    role, oversight_body, agency_a, maintainer_a, platform_admin
):
    newcomer = UserFactory(username="newcomer")
    with pytest.raises(PolicyViolation):
        services.membership_add(
            actor=maintainer_a, agency=agency_a, user=newcomer, role=role
        )
    membership = services.membership_add(
        actor=platform_admin, agency=oversight_body, user=newcomer, role=role
    )
    assert membership.role == role


def test_reviewer_role_only_in_oversight_bodies(agency_a, platform_admin):
    with pytest.raises(DomainError) as caught:
        services.membership_add(
            actor=platform_admin,
            agency=agency_a,
            user=UserFactory(username="newcomer"),
            role=Role.REVIEWER,
        )
    assert "role" in caught.value.fields


def test_one_agency_per_person(agency_a, maintainer_a, member_b):
    with pytest.raises(Conflict):
        services.membership_add(actor=maintainer_a, agency=agency_a, user=member_b)


def test_maintainer_of_another_agency_cannot_add_people(agency_a, agency_b):
    maintainer_b = MembershipFactory(agency=agency_b, role=Role.MAINTAINER).user
    with pytest.raises(PolicyViolation):
        services.membership_add(
            actor=maintainer_b, agency=agency_a, user=UserFactory(username="x")
        )


def test_role_change_is_audited_as_role_changed(maintainer_a, member_a):
    membership = member_a.membership
    services.membership_set_role(
        actor=maintainer_a, membership=membership, role=Role.MAINTAINER
    )
    membership.refresh_from_db()
    assert membership.role == Role.MAINTAINER
    (event,) = events("membership.role_changed")
    assert event.payload_data == {"user": "alice", "from": "member", "to": "maintainer"}
    assert event.actor_label.startswith("mara#")


def test_nobody_changes_their_own_role(maintainer_a, agency_a, platform_admin):
    with pytest.raises(PolicyViolation):
        services.membership_set_role(
            actor=maintainer_a, membership=maintainer_a.membership, role=Role.MEMBER
        )
    admin_membership = MembershipFactory(
        user=platform_admin, agency=agency_a, role=Role.ADMIN
    )
    with pytest.raises(PolicyViolation):
        services.membership_set_role(
            actor=platform_admin, membership=admin_membership, role=Role.MEMBER
        )
    with pytest.raises(PolicyViolation):
        services.membership_remove(
            actor=maintainer_a, membership=maintainer_a.membership
        )
    assert events() == []


def test_members_do_not_manage_people(member_a, maintainer_a):
    with pytest.raises(PolicyViolation):
        services.membership_set_role(
            actor=member_a, membership=maintainer_a.membership, role=Role.MEMBER
        )


def test_maintainer_cannot_touch_a_reviewer(oversight_body, reviewer, platform_admin):
    oversight_maintainer = MembershipFactory(
        agency=oversight_body, role=Role.MAINTAINER
    ).user
    with pytest.raises(PolicyViolation):
        services.membership_set_role(
            actor=oversight_maintainer,
            membership=reviewer.membership,
            role=Role.MEMBER,
        )
    with pytest.raises(PolicyViolation):
        services.membership_remove(
            actor=oversight_maintainer, membership=reviewer.membership
        )
    services.membership_set_role(
        actor=platform_admin, membership=reviewer.membership, role=Role.MEMBER
    )
    assert user_role(reviewer) == Role.MEMBER  # the cached role was dropped


def test_membership_remove(maintainer_a, member_a):
    services.membership_remove(actor=maintainer_a, membership=member_a.membership)
    assert not Membership.objects.filter(user=member_a).exists()
    (event,) = events("membership.removed")
    assert event.payload_data == {"user": "alice", "role": "member"}
    assert event.agency_slug == "city-a"


# --- licences ------------------------------------------------------------------


def test_licence_register_is_idempotent_on_the_normalised_expression(member_a):
    first, created = services.licence_register(
        actor=member_a, expression="apache-2.0 or mit"
    )
    again, created_again = services.licence_register(
        actor=member_a, expression="Apache-2.0   OR   MIT"
    )
    assert created and not created_again
    assert first.pk == again.pk
    assert first.expression == "Apache-2.0 OR MIT"
    assert first.spdx_ids == ["Apache-2.0", "MIT"]
    assert first.is_osi_approved and first.allows_commercial_use
    assert len(events("licence.registered")) == 1


def test_licence_register_names_unknown_identifiers(member_a):
    with pytest.raises(licences.LicenceExpressionError) as caught:
        services.licence_register(actor=member_a, expression="MIT OR made-up-1.0")
    assert "made-up-1.0" in caught.value.message
    assert not Licence.objects.exists()


# --- datasets ------------------------------------------------------------------


@pytest.mark.parametrize("status", [PersonalData.PERSONAL, PersonalData.PSEUDONYMISED])
def test_personal_data_needs_a_legal_basis(cat, member_a, status):
    with pytest.raises(DomainError) as caught:
        services.dataset_version_create(
            actor=member_a,
            dataset=cat.dataset_a,
            version="2.0.0",
            licence=cat.licence,
            personal_data=status,
            **DATASHEET,
        )
    assert caught.value.fields["legal_basis"][0]["code"] == "required"
    version = services.dataset_version_create(
        actor=member_a,
        dataset=cat.dataset_a,
        version="2.0.0",
        licence=cat.licence,
        personal_data=status,
        legal_basis="GDPR Art. 6(1)(e)",
        **DATASHEET,
    )
    assert version.personal_data == status


def test_dataset_version_is_unique_per_dataset(cat, member_a):
    with pytest.raises(Conflict) as caught:
        services.dataset_version_create(
            actor=member_a,
            dataset=cat.dataset_a,
            version="1.0.0",
            licence=cat.licence,
            **DATASHEET,
        )
    assert caught.value.fields["version"][0]["code"] == "unique"


def test_dataset_versions_are_written_by_the_owning_agency_only(
    cat, member_b, reviewer
):
    for outsider in (member_b, reviewer):
        with pytest.raises(PolicyViolation):
            services.dataset_version_create(
                actor=outsider,
                dataset=cat.dataset_a,
                version="2.0.0",
                licence=cat.licence,
                **DATASHEET,
            )


def test_no_service_updates_a_dataset_version():
    # Attaching the one data file once (services.artifacts) and handing it out
    # (services.downloads) leave the datasheet as it was registered.
    file_services = set(dir(services.artifacts)) | set(dir(services.downloads))
    assert not [
        name
        for name in set(dir(services)) - file_services
        if name.startswith("dataset_version_") and name != "dataset_version_create"
    ]


def test_reviewers_register_nothing(reviewer):
    with pytest.raises(PolicyViolation):
        services.dataset_create(actor=reviewer, name="X", slug="x")
    with pytest.raises(PolicyViolation):
        services.model_create(
            actor=reviewer, name="X", slug="x", task="other", intended_use="x"
        )


# --- models --------------------------------------------------------------------


def test_model_update_by_maintainers_records_the_change(cat, member_a, maintainer_a):
    with pytest.raises(PolicyViolation):
        services.model_update(actor=member_a, model=cat.model_a, name="New name")
    services.model_update(
        actor=maintainer_a, model=cat.model_a, name="New name", domain="housing"
    )
    (event,) = events("model.updated")
    assert set(event.payload_data["changed"]) == {"name", "domain"}
    # An update that changes nothing records nothing.
    services.model_update(actor=maintainer_a, model=cat.model_a, name="New name")
    assert len(events("model.updated")) == 1


def test_long_text_changes_are_audited_by_digest(cat, maintainer_a):
    card = "A long intended-use statement. " * 4000
    services.model_update(actor=maintainer_a, model=cat.model_a, intended_use=card)
    (event,) = events("model.updated")
    change = event.payload_data["changed"]["intended_use"]
    assert change["to"]["chars"] == len(card)
    assert len(change["to"]["sha256"]) == 64


def version_kwargs(cat, **overrides):
    return {
        "model": cat.model_a,
        "version": "2.0.0",
        "licence": cat.licence,
        **overrides,
    }


def test_model_version_create_links_datasets_and_base(cat, member_a):
    version = services.model_version_create(
        actor=member_a,
        **version_kwargs(
            cat,
            base_version=cat.public_version_b,
            derivation="fine-tuned",
            datasets=[
                (cat.dataset_version_a, "fine-tuning"),
                (cat.public_dataset_version_b, "evaluation"),
            ],
        ),
    )
    links = sorted(version.dataset_links.values_list("dataset_version_id", "role"))
    assert links == sorted(
        [
            (cat.dataset_version_a.pk, "fine-tuning"),
            (cat.public_dataset_version_b.pk, "evaluation"),
        ]
    )
    (event,) = events("model_version.created")
    assert event.payload_data["base_version"] == cat.public_version_b.pk
    assert event.agency_slug == "city-a"


def test_model_version_is_unique_per_model(cat, member_a):
    with pytest.raises(Conflict) as caught:
        services.model_version_create(
            actor=member_a, **version_kwargs(cat, version="1.0.0")
        )
    assert caught.value.status_code == 409
    assert caught.value.fields["version"][0]["code"] == "unique"


def test_base_version_hidden_from_the_actor_does_not_exist(cat, member_a):
    with pytest.raises(DomainError) as caught:
        services.model_version_create(
            actor=member_a,
            **version_kwargs(cat, base_version=cat.version_b, derivation="fine-tuned"),
        )
    assert caught.value.fields["base_version"][0]["code"] == "does_not_exist"
    assert "does not exist" in caught.value.fields["base_version"][0]["message"]


def test_base_version_must_be_released_and_derivation_named(cat, member_a):
    draft = ModelVersionFactory(model=cat.model_a, version="1.1.0", licence=cat.licence)
    with pytest.raises(DomainError) as caught:
        services.model_version_create(
            actor=member_a,
            **version_kwargs(cat, base_version=draft, derivation="other"),
        )
    assert caught.value.fields["base_version"][0]["code"] == "not_released"
    with pytest.raises(DomainError) as caught:
        services.model_version_create(
            actor=member_a, **version_kwargs(cat, base_version=cat.version_a)
        )
    assert "derivation" in caught.value.fields


def test_dataset_links_must_be_visible(cat, member_a):
    with pytest.raises(DomainError) as caught:
        services.model_version_create(
            actor=member_a,
            **version_kwargs(cat, datasets=[(cat.dataset_version_b, "training")]),
        )
    assert caught.value.fields["datasets"][0]["code"] == "does_not_exist"
    assert not ModelVersion.objects.filter(version="2.0.0").exists()


def test_released_version_is_immutable(cat, member_a):
    with pytest.raises(Conflict) as caught:
        services.model_version_update(
            actor=member_a, model_version=cat.version_a, limitations="changed"
        )
    assert caught.value.code == "version_released"
    assert caught.value.message == (
        "Released content is immutable: register a new version."
    )
    cat.version_a.refresh_from_db()
    assert cat.version_a.limitations == ""


def test_unreleased_version_update_replaces_links(cat, member_a):
    draft = ModelVersionFactory(model=cat.model_a, version="1.1.0", licence=cat.licence)
    other = DatasetVersionFactory(dataset=cat.dataset_a, version="1.1.0")
    services.model_version_update(
        actor=member_a,
        model_version=draft,
        datasets=[(cat.dataset_version_a, "training")],
    )
    services.model_version_update(
        actor=member_a,
        model_version=draft,
        datasets=[(other, "evaluation")],
        risks="Hallucinated addresses.",
    )
    assert list(draft.dataset_links.values_list("dataset_version_id", "role")) == [
        (other.pk, "evaluation")
    ]
    last = events("model_version.updated")[-1]
    assert set(last.payload_data["changed"]) == {"risks", "datasets"}
    # Released later (the artifact service's job): frozen from then on.
    ModelVersion.objects.filter(pk=draft.pk).update(released_at=timezone.now())
    with pytest.raises(Conflict):
        services.model_version_update(actor=member_a, model_version=draft, risks="x")


def test_every_write_records_exactly_one_event(cat, member_a, maintainer_a):
    services.dataset_create(actor=member_a, name="D", slug="d")
    services.model_create(
        actor=member_a, name="M", slug="m", task="other", intended_use="x"
    )
    services.dataset_version_create(
        actor=member_a,
        dataset=cat.dataset_a,
        version="3.0.0",
        licence=cat.licence,
        **DATASHEET,
    )
    assert [e.action for e in events()] == [
        "dataset.created",
        "model.created",
        "dataset_version.created",
    ]
    assert DatasetVersion.objects.filter(version="3.0.0").count() == 1


# --- tokens --------------------------------------------------------------------


def test_token_create_and_revoke_are_audited(member_a):
    token, secret = services.token_create(actor=member_a)
    assert secret.startswith(token.token_key)
    assert token.expiry > timezone.now()
    assert services.token_revoke(actor=member_a, token_key=token.token_key)
    assert not AuthToken.objects.filter(user=member_a).exists()
    assert [e.action for e in events()] == ["token.created", "token.revoked"]
    assert events()[0].object_id == token.token_key


def test_token_revoke_reaches_only_own_tokens(member_a, member_b):
    token, _ = services.token_create(actor=member_b)
    assert not services.token_revoke(actor=member_a, token_key=token.token_key)
    assert AuthToken.objects.filter(user=member_b).exists()


def test_token_limit(member_a, settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_LIMIT_PER_USER": 2}
    services.token_create(actor=member_a)
    services.token_create(actor=member_a)
    with pytest.raises(Conflict) as caught:
        services.token_create(actor=member_a)
    assert caught.value.code == "token_limit_reached"


@pytest.mark.django_db
def test_model_publish_is_for_oversight_only_and_audited_once(
    member_a, reviewer, agency_a
):
    from registry.models import AIModel, Visibility
    from tests.factories import AIModelFactory

    model = AIModelFactory(agency=agency_a)

    with pytest.raises(PolicyViolation):
        services.model_publish(actor=member_a, model=model, reason="self-service")
    assert AIModel.objects.get(pk=model.pk).visibility == Visibility.PRIVATE

    assert services.model_publish(actor=reviewer, model=model, reason="approved")
    assert not services.model_publish(actor=reviewer, model=model, reason="again")
    assert AIModel.objects.get(pk=model.pk).visibility == Visibility.PUBLIC
    events = AuditEvent.objects.filter(
        action="model.published", object_id=str(model.pk)
    )
    assert events.count() == 1
    assert events.get().payload_data["reason"] == "approved"


# --- A version's status is the one governance passes in -------------------------


def test_status_sync_sets_the_status_it_is_given_and_audits_the_change(
    agency_a, member_a
):
    version = ModelVersionFactory(model__agency=agency_a)

    status = services.model_version_status_sync(
        actor=member_a,
        version=version,
        status=lambda: "in_review",
        detail=lambda: {"use_case_statuses": ["submitted"]},
    )
    again = services.model_version_status_sync(
        actor=member_a, version=version, status="in_review"
    )

    assert status == again == "in_review"
    assert ModelVersion.objects.get(pk=version.pk).status == "in_review"
    [event] = events("model_version.status_changed")
    assert event.payload_data == {
        "from": "draft",
        "to": "in_review",
        "use_case_statuses": ["submitted"],
    }


def test_status_sync_refuses_a_status_versions_do_not_have(agency_a, member_a):
    version = ModelVersionFactory(model__agency=agency_a)

    with pytest.raises(ValueError):
        services.model_version_status_sync(
            actor=member_a, version=version, status="submitted"
        )
    assert ModelVersion.objects.get(pk=version.pk).status == "draft"
    assert events("model_version.status_changed") == []


def test_the_registry_spells_out_no_use_case_status():
    import inspect

    source = inspect.getsource(services.catalogue)
    for status in ("submitted", "changes_requested", "rejected", "expired"):
        assert f'"{status}"' not in source
