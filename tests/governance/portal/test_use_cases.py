"""The agency's use-case pages: describe, answer the questionnaire, submit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import Submission, UseCase, UseCaseStatus
from governance.services import use_cases as use_case_services
from tests.factories import ModelVersionFactory
from tests.governance.conftest import TIER_ANSWERS

pytestmark = pytest.mark.django_db


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _fields(version, **overrides) -> dict:
    return {
        "model_version": version.pk,
        "title": "Drafting replies about waste collection",
        "purpose": "Draft first replies to letters; a clerk edits and signs each.",
        "public_service": "Waste collection",
        "affected_people": "Residents who write to the city",
        "decision_informed": "None",
        "human_oversight": "A clerk reads every draft.",
        "valid_until": (timezone.localdate() + timedelta(days=200)).isoformat(),
        **overrides,
    }


def _answers(tier: str = "minimal") -> dict:
    data = {}
    for question, answer in TIER_ANSWERS[tier].items():
        data[f"q_{question}"] = answer
    return data


def test_anonymous_is_sent_to_sign_in(client, draft_use_case):
    for path in (
        "/portal/use-cases/mine/",
        "/portal/use-cases/mine/new/",
        f"/portal/use-cases/mine/{draft_use_case.pk}/",
        f"/portal/use-cases/mine/{draft_use_case.pk}/assessment/",
    ):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/accounts/login/")


def test_member_describes_a_use_case_through_the_service(member_a, governed_version):
    response = client_of(member_a).post(
        "/portal/use-cases/mine/new/", _fields(governed_version)
    )
    use_case = UseCase.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/portal/use-cases/mine/{use_case.pk}/assessment/"
    assert (use_case.status, use_case.agency, use_case.created_by) == (
        UseCaseStatus.DRAFT,
        member_a.membership.agency,
        member_a,
    )
    assert AuditEvent.objects.filter(
        action="use_case.created", object_id=str(use_case.pk)
    ).exists()


def test_invalid_fields_are_shown_on_the_form(member_a, governed_version):
    client = client_of(member_a)
    blank = client.post(
        "/portal/use-cases/mine/new/", _fields(governed_version, title="")
    )
    assert blank.status_code == 200 and blank.context["form"].errors["title"]
    past = client.post(
        "/portal/use-cases/mine/new/",
        _fields(governed_version, valid_until=timezone.localdate().isoformat()),
    )
    # The service's rule (a date after today), put back on its field.
    assert "after today" in past.context["form"].errors["valid_until"][0]
    assert 'role="alert"' in past.content.decode()
    assert not UseCase.objects.exists()


def test_another_agencys_version_cannot_be_chosen(member_a, member_b):
    hidden = ModelVersionFactory(model__agency=member_b.membership.agency)
    response = client_of(member_a).post("/portal/use-cases/mine/new/", _fields(hidden))
    assert response.context["form"].errors["model_version"]
    assert not UseCase.objects.exists()


def test_c1_other_agency_gets_404_and_reviewers_403_on_writes(
    draft_use_case, member_b, reviewer
):
    other = client_of(member_b)
    base = f"/portal/use-cases/mine/{draft_use_case.pk}/"
    for path in (base, base + "edit/", base + "assessment/"):
        assert other.get(path).status_code == 404, path
    assert other.post(base + "submit/").status_code == 404
    assert draft_use_case not in other.get("/portal/use-cases/mine/").context["page"]

    oversight = client_of(reviewer)
    assert oversight.get("/portal/use-cases/mine/new/").status_code == 403
    assert oversight.get(base + "edit/").status_code == 403
    assert oversight.get(base + "assessment/").status_code == 403
    submitted = oversight.post(base + "submit/", follow=True)
    assert "Only members and maintainers" in submitted.content.decode()
    draft_use_case.refresh_from_db()
    assert draft_use_case.status == UseCaseStatus.DRAFT


def test_questionnaire_renders_fieldsets_and_sets_the_tier(
    member_a, draft_use_case, aia_questionnaire
):
    client = client_of(member_a)
    path = f"/portal/use-cases/mine/{draft_use_case.pk}/assessment/"
    html = client.get(path).content.decode()
    questions = aia_questionnaire.definition["questions"]
    assert html.count("<fieldset") == len(questions)
    assert html.count("<legend>") == len(questions)
    assert 'type="radio" name="q_decision_role"' in html
    assert 'type="checkbox" name="q_areas"' in html

    missing = client.post(path, {"q_areas": "migration"})
    assert missing.status_code == 200
    assert missing.context["form"].errors["q_scale"] == ["Choose an answer."]

    response = client.post(path, _answers("high"))
    assert response.status_code == 302
    draft_use_case.refresh_from_db()
    assert draft_use_case.risk_tier == "high"
    assert draft_use_case.answers["areas"] == ["migration"]
    assert AuditEvent.objects.filter(action="use_case.assessed").exists()

    page = client.get(f"/portal/use-cases/mine/{draft_use_case.pk}/")
    html = page.content.decode()
    assert "High risk" in html
    assert "Migration, asylum and border control" in html  # the answer, in words
    evaluate = f"/portal/versions/{draft_use_case.model_version_id}/evaluate/"
    assert evaluate in html
    assert "makes the use at least" in html  # the trigger's reason


def test_an_answer_the_service_refuses_lands_on_its_question(
    member_a, draft_use_case, aia_questionnaire
):
    path = f"/portal/use-cases/mine/{draft_use_case.pk}/assessment/"
    answers = _answers()
    answers["q_prohibited_practices"] = ["none", "social_scoring"]  # none excludes
    response = client_of(member_a).post(path, answers)
    assert response.status_code == 200
    assert (
        "excludes every other"
        in response.context["form"].errors["q_prohibited_practices"][0]
    )
    draft_use_case.refresh_from_db()
    assert draft_use_case.risk_tier is None


def test_submit_needs_an_assessment_then_freezes_the_use_case(
    member_a, maintainer_a, draft_use_case, aia_questionnaire
):
    client = client_of(maintainer_a)
    submit = f"/portal/use-cases/mine/{draft_use_case.pk}/submit/"
    refused = client.post(submit, follow=True)
    assert "answer the questionnaire first" in refused.content.decode()
    assert not Submission.objects.exists()

    use_case_services.use_case_assess(
        actor=member_a, use_case=draft_use_case, answers=TIER_ANSWERS["minimal"]
    )
    done = client.post(submit, follow=True)
    draft_use_case.refresh_from_db()
    assert draft_use_case.status == UseCaseStatus.SUBMITTED
    assert Submission.objects.get().submitted_by == maintainer_a
    assert AuditEvent.objects.filter(action="use_case.submitted").exists()
    html = done.content.decode()
    assert "Submission 1 by mara" in html
    assert f"/portal/use-cases/mine/{draft_use_case.pk}/edit/" not in html

    frozen = client.post(
        f"/portal/use-cases/mine/{draft_use_case.pk}/edit/",
        _fields(draft_use_case.model_version, title="Something else"),
    )
    assert "can change only while a draft" in " ".join(
        frozen.context["form"].non_field_errors()
    )


def test_edit_changes_the_draft(member_a, draft_use_case):
    path = f"/portal/use-cases/mine/{draft_use_case.pk}/edit/"
    client = client_of(member_a)
    form = client.get(path).context["form"]
    assert form.initial["title"] == draft_use_case.title
    response = client.post(
        path, _fields(draft_use_case.model_version, title="Replies, second draft")
    )
    assert response.status_code == 302
    draft_use_case.refresh_from_db()
    assert draft_use_case.title == "Replies, second draft"
    assert AuditEvent.objects.filter(action="use_case.updated").exists()


@pytest.mark.parametrize("size", [2, 20])
def test_list_issues_a_constant_number_of_queries(
    member_a, governed_version, django_assert_max_num_queries, size
):
    for n in range(size):
        use_case_services.use_case_create(
            actor=member_a,
            model_version=governed_version,
            title=f"Use {n}",
            purpose="Drafting.",
            public_service="Waste",
            valid_until=timezone.localdate() + timedelta(days=30),
        )
    client = client_of(member_a)
    client.get("/portal/use-cases/mine/")
    with django_assert_max_num_queries(7):
        response = client.get("/portal/use-cases/mine/?status=draft")
    assert len(response.context["page"].object_list) == size
