"""The impact questionnaire: its definition, answer validation, scores and tiers."""

from __future__ import annotations

import copy

import pytest

from audit.models import AuditEvent
from config.exceptions import Conflict, DomainError, PolicyViolation
from governance import risk
from governance.models import UseCase, UseCaseStatus
from governance.services import use_cases as use_case_services
from tests.registry.conftest import token_client

pytestmark = pytest.mark.usefixtures("fast_password_hashing")

# Every answer of weight 0: the floor of the score.
ZERO = {
    "prohibited_practices": ["none"],
    "areas": ["general_information"],
    "decision_role": "no_decision",
    "affected_people": "staff_only",
    "scale": "under_1k",
    "impact_on_rights": "none",
    "reversibility": "easily",
    "personal_data_in_use": "none",
    "data_representativeness": "assessed",
    "public_interaction": "no",
    "human_oversight": "every_output",
    "explainability": "yes",
    "contestability": "not_needed",
    "fallback": "yes",
}
# 3 + 2 + 2 + 3 + 2 = 12: exactly the 'limited' threshold.
TWELVE = {
    **ZERO,
    "decision_role": "recommends",
    "affected_people": "specific_individuals",
    "scale": "100k_to_1m",
    "impact_on_rights": "moderate",
    "reversibility": "with_effort",
}
# 12 + 4 + 3 + 3 + 1 + 1 = 24: exactly the 'high' threshold.
TWENTY_FOUR = {
    **TWELVE,
    "personal_data_in_use": "special_category",
    "data_representativeness": "unknown",
    "human_oversight": "on_appeal",
    "explainability": "partly",
    "fallback": "degraded",
}


@pytest.fixture
def definition():
    [shipped] = risk.shipped_definitions()
    return shipped


def test_shipped_questionnaire_is_well_formed(definition, aia_questionnaire):
    risk.check_definition(definition)
    assert (definition["name"], definition["version"]) == ("aia", "1")
    assert 12 <= len(definition["questions"]) <= 15
    assert aia_questionnaire.definition == definition
    # Every question has an answer of weight 0, so ZERO really is the floor.
    assert set(ZERO) == {q["id"] for q in definition["questions"]}


@pytest.mark.parametrize(
    ("answers", "score", "tier"),
    [
        (ZERO, 0, "minimal"),
        ({**TWELVE, "scale": "1k_to_100k"}, 11, "minimal"),
        (TWELVE, 12, "limited"),
        ({**TWENTY_FOUR, "fallback": "yes"}, 23, "limited"),
        (TWENTY_FOUR, 24, "high"),
    ],
)
def test_score_maps_to_tier_at_the_thresholds(definition, answers, score, tier):
    assessment = risk.assess(definition, answers)

    assert (assessment.score, assessment.tier) == (score, tier)
    assert assessment.reasons[0].startswith(f"The score {score} reaches the '{tier}'")


@pytest.mark.parametrize(
    ("practice", "article"),
    [
        ("social_scoring", "Article 5(1)(c)"),
        ("realtime_remote_biometric_id", "Article 5(1)(h)"),
        ("emotion_recognition_work_education", "Article 5(1)(f)"),
    ],
)
def test_an_article_5_practice_forces_prohibited_whatever_the_score(
    definition, practice, article
):
    score, tier, reasons = risk.assess(
        definition, {**ZERO, "prohibited_practices": [practice]}
    )

    assert score == 0
    assert tier == "prohibited"
    assert any(practice in r and article in r for r in reasons)


def test_an_annex_iii_area_forces_high_at_a_low_score(definition):
    score, tier, reasons = risk.assess(
        definition, {**ZERO, "areas": ["essential_services_benefits"]}
    )

    assert (score, tier) == (4, "high")
    assert "Annex III, point 5(a)" in reasons[1]


def test_direct_interaction_with_the_public_makes_it_at_least_limited(definition):
    score, tier, reasons = risk.assess(
        definition, {**ZERO, "public_interaction": "yes_disclosed"}
    )

    assert (score, tier) == (1, "limited")
    assert "Article 50(1)" in reasons[1]


def test_a_trigger_never_lowers_a_higher_scored_tier(definition):
    _, tier, _ = risk.assess(
        definition, {**TWENTY_FOUR, "public_interaction": "yes_disclosed"}
    )

    assert tier == "high"


def test_multiple_choice_weights_add_up(definition):
    score, _, _ = risk.assess(
        definition, {**ZERO, "areas": ["employment", "education", "other"]}
    )

    assert score == 9


@pytest.mark.parametrize(
    ("answers", "code", "named"),
    [
        ({**ZERO, "mood": "good"}, "unknown_question", "'mood'"),
        ({**ZERO, "scale": "enormous"}, "unknown_answer", "'enormous'"),
        ({**ZERO, "areas": ["employment", "teleportation"]}, "unknown_answer", "areas"),
        ({k: v for k, v in ZERO.items() if k != "scale"}, "missing_answer", "'scale'"),
        ({**ZERO, "scale": ["under_1k"]}, "invalid_answer", "'scale'"),
        ({**ZERO, "areas": "employment"}, "invalid_answer", "'areas'"),
        ({**ZERO, "areas": []}, "invalid_answer", "'areas'"),
        (
            {**ZERO, "prohibited_practices": ["none", "social_scoring"]},
            "invalid_answer",
            "excludes every other",
        ),
    ],
)
def test_invalid_answers_are_refused_naming_the_question_or_answer(
    definition, answers, code, named
):
    with pytest.raises(DomainError) as caught:
        risk.assess(definition, answers)

    assert caught.value.code == "invalid_answers"
    errors = caught.value.fields["answers"]
    assert any(e["code"] == code and named in e["message"] for e in errors), errors


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d["thresholds"].reverse(), "first one must start at score 0"),
        (
            lambda d: d["thresholds"].append({"min_score": 99, "tier": "prohibited"}),
            "not a scored tier",
        ),
        (lambda d: d["triggers"][0].update(answer="nothing"), "no such question"),
        (lambda d: d["questions"][1].update(id="prohibited_practices"), "repeated"),
        (lambda d: d["questions"][2]["answers"][0].update(weight=-1), "weight"),
    ],
)
def test_a_malformed_definition_is_refused(definition, mutate, problem):
    broken = copy.deepcopy(definition)
    mutate(broken)

    with pytest.raises(ValueError, match=problem):
        risk.check_definition(broken)


def test_assess_stores_score_tier_answers_and_reasons_with_an_audit_event(
    member_a, draft_use_case, aia_questionnaire
):
    answers = {**ZERO, "areas": ["migration"]}
    use_case = use_case_services.use_case_assess(
        actor=member_a, use_case=draft_use_case, answers=answers
    )

    stored = UseCase.objects.get(pk=use_case.pk)
    assert (stored.risk_score, stored.risk_tier) == (4, "high")
    assert stored.questionnaire == aia_questionnaire
    assert stored.answers["scale"] == ["under_1k"]  # kept, as lists of ids
    assert stored.answers["areas"] == ["migration"]
    assert "Annex III, point 7" in stored.risk_reasons[1]
    assert stored.assessed_by == member_a and stored.assessed_at is not None
    event = AuditEvent.objects.filter(action="use_case.assessed").last()
    assert event.object_id == str(use_case.pk)
    assert event.payload_data["tier"] == "high"
    assert event.payload_data["questionnaire"] == "aia@1"
    assert event.payload_data["answers"]["areas"] == ["migration"]


def test_assessment_is_refused_once_the_use_case_is_frozen(
    member_a, draft_use_case, aia_questionnaire
):
    # Set-up only: the lifecycle services move the status in the product.
    UseCase.objects.filter(pk=draft_use_case.pk).update(status=UseCaseStatus.SUBMITTED)

    with pytest.raises(Conflict) as caught:
        use_case_services.use_case_assess(
            actor=member_a, use_case=draft_use_case, answers=ZERO
        )
    assert caught.value.code == "usecase_frozen"
    assert UseCase.objects.get(pk=draft_use_case.pk).risk_tier is None


def test_assessment_is_allowed_again_when_changes_are_requested(
    member_a, draft_use_case, aia_questionnaire
):
    UseCase.objects.filter(pk=draft_use_case.pk).update(
        status=UseCaseStatus.CHANGES_REQUESTED
    )

    use_case = use_case_services.use_case_assess(
        actor=member_a, use_case=draft_use_case, answers=TWELVE
    )
    assert use_case.risk_tier == "limited"


def test_a_reviewer_cannot_assess_an_agencys_use_case(
    reviewer, draft_use_case, aia_questionnaire
):
    with pytest.raises(PolicyViolation):
        use_case_services.use_case_assess(
            actor=reviewer, use_case=draft_use_case, answers=ZERO
        )


def test_assessment_api_sets_the_tier(member_a, draft_use_case, aia_questionnaire):
    response = token_client(member_a).post(
        f"/api/v1/use-cases/{draft_use_case.pk}/assessment/",
        {"questionnaire": "aia@1", "answers": TWENTY_FOUR},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["risk_score"], body["risk_tier"]) == (24, "high")
    assert body["questionnaire"] == "aia@1"
    assert body["answers"]["decision_role"] == ["recommends"]


def test_assessment_api_names_the_unknown_question_in_a_400(
    member_a, draft_use_case, aia_questionnaire
):
    response = token_client(member_a).post(
        f"/api/v1/use-cases/{draft_use_case.pk}/assessment/",
        {"answers": {**ZERO, "favourite_colour": "blue"}},
        format="json",
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_answers"
    assert body["fields"]["answers"] == [
        {"code": "unknown_question", "message": "Unknown question 'favourite_colour'."}
    ]


def test_assessment_api_refuses_an_unknown_questionnaire(
    member_a, draft_use_case, aia_questionnaire
):
    response = token_client(member_a).post(
        f"/api/v1/use-cases/{draft_use_case.pk}/assessment/",
        {"questionnaire": "aia@9", "answers": ZERO},
        format="json",
    )

    assert response.status_code == 400
    assert "aia@9" in response.json()["fields"]["questionnaire"][0]["message"]


def test_assessment_api_tenancy(
    member_b, reviewer, anon, draft_use_case, aia_questionnaire
):
    url = f"/api/v1/use-cases/{draft_use_case.pk}/assessment/"
    body = {"answers": ZERO}

    assert token_client(member_b).post(url, body, format="json").status_code == 404
    assert token_client(reviewer).post(url, body, format="json").status_code == 403
    assert anon.post(url, body, format="json").status_code == 401
    assert UseCase.objects.get(pk=draft_use_case.pk).risk_tier is None


def test_questionnaires_are_listed_for_any_signed_in_user(
    member_b, anon, aia_questionnaire
):
    response = token_client(member_b).get("/api/v1/questionnaires/")

    assert response.status_code == 200
    [found] = [q for q in response.json()["results"] if q["name"] == "aia"]
    assert found["version"] == "1"
    assert len(found["definition"]["questions"]) == 14
    detail = token_client(member_b).get(f"/api/v1/questionnaires/{found['id']}/")
    assert detail.status_code == 200
    assert anon.get("/api/v1/questionnaires/").status_code == 401
