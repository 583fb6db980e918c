"""The use-case, policy and policy-result API: writes, tenancy, schema, admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import PolicyResult, UseCase, UseCaseStatus
from governance.services import policies as policy_services
from governance.services import use_cases as use_case_services
from registry.models import Visibility
from tests.factories import ModelVersionFactory
from tests.registry.conftest import token_client

pytestmark = pytest.mark.usefixtures("fast_password_hashing")

PD = {"id": "pd", "kind": "personal_data", "mode": "forbidden"}
SIZE = {"id": "size", "kind": "size_cost", "max_parameters": 10}


def _body(version, **extra) -> dict:
    return {
        "model_version": version.pk,
        "title": "Answering questions about waste collection",
        "purpose": "Answer residents' questions on the city website.",
        "public_service": "Waste collection, City A",
        "human_oversight": "Staff review a daily sample of answers.",
        "valid_until": (timezone.localdate() + timedelta(days=200)).isoformat(),
        **extra,
    }


def _policy(actor, rules, name="baseline", **extra):
    return policy_services.policy_create(
        actor=actor,
        name=name,
        title=f"{name} policy",
        scope=extra.pop("scope", "platform"),
        rules=rules,
        **extra,
    )


def _freeze(use_case) -> None:
    # Set-up only: the lifecycle services move the status in the product.
    UseCase.objects.filter(pk=use_case.pk).update(status=UseCaseStatus.SUBMITTED)


# --- use cases -------------------------------------------------------------------


def test_a_member_writes_a_draft_use_case(member_a, governed_version):
    response = token_client(member_a).post(
        "/api/v1/use-cases/", _body(governed_version), format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["agency"] == "city-a"
    assert body["status"] == "draft"
    assert body["is_editable"] is True
    assert body["risk_tier"] is None and body["risk_score"] is None
    assert body["affected_people"] == ""
    assert body["model_version_label"] == str(governed_version)
    assert body["created_by"] == "alice"
    event = AuditEvent.objects.filter(action="use_case.created").last()
    assert event.object_id == str(body["id"])
    assert event.agency_slug == "city-a"


def test_a_use_case_may_name_another_agencys_public_version(member_b, governed_version):
    private = token_client(member_b).post(
        "/api/v1/use-cases/", _body(governed_version), format="json"
    )
    governed_version.model.visibility = Visibility.PUBLIC
    governed_version.model.save()  # set-up
    public = token_client(member_b).post(
        "/api/v1/use-cases/", _body(governed_version), format="json"
    )

    assert private.status_code == 400
    assert "model_version" in private.json()["fields"]
    assert public.status_code == 201
    assert public.json()["agency"] == "region-b"


def test_creation_refuses_reviewers_past_dates_and_asks_admins_for_an_agency(
    reviewer, member_a, platform_admin, governed_version
):
    by_reviewer = token_client(reviewer).post(
        "/api/v1/use-cases/", _body(governed_version), format="json"
    )
    past = token_client(member_a).post(
        "/api/v1/use-cases/",
        _body(governed_version, valid_until=timezone.localdate().isoformat()),
        format="json",
    )
    admin = token_client(platform_admin)
    no_agency = admin.post("/api/v1/use-cases/", _body(governed_version), format="json")
    with_agency = admin.post(
        "/api/v1/use-cases/", _body(governed_version, agency="city-a"), format="json"
    )

    assert by_reviewer.status_code == 403
    assert past.status_code == 400
    assert past.json()["fields"]["valid_until"][0]["message"] == (
        "The end of validity must be a date after today."
    )
    assert no_agency.status_code == 400
    assert "agency" in no_agency.json()["fields"]
    assert with_agency.status_code == 201


def test_members_see_their_agencys_use_cases_and_reviewers_see_all(
    member_a, member_b, reviewer, draft_use_case
):
    def ids(user):
        response = token_client(user).get("/api/v1/use-cases/")
        assert response.status_code == 200
        return [item["id"] for item in response.json()["results"]]

    assert ids(member_a) == [draft_use_case.pk]
    assert ids(member_b) == []
    assert ids(reviewer) == [draft_use_case.pk]
    assert (
        token_client(reviewer)
        .get(f"/api/v1/use-cases/{draft_use_case.pk}/")
        .status_code
        == 200
    )


def test_a_draft_is_edited_and_the_change_audited(member_a, draft_use_case):
    response = token_client(member_a).patch(
        f"/api/v1/use-cases/{draft_use_case.pk}/",
        {"title": "Drafting replies about bins"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["title"] == "Drafting replies about bins"
    event = AuditEvent.objects.filter(action="use_case.updated").last()
    assert event.payload_data["changes"] == {
        "title": {
            "from": "Drafting replies to citizens",
            "to": "Drafting replies about bins",
        }
    }


def test_a_submitted_use_case_is_frozen(member_a, draft_use_case):
    _freeze(draft_use_case)

    response = token_client(member_a).patch(
        f"/api/v1/use-cases/{draft_use_case.pk}/", {"title": "Other"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["code"] == "usecase_frozen"
    assert UseCase.objects.get(pk=draft_use_case.pk).title != "Other"


def test_use_cases_are_neither_replaced_nor_deleted(member_a, draft_use_case):
    api = token_client(member_a)
    url = f"/api/v1/use-cases/{draft_use_case.pk}/"

    assert api.put(url, {}, format="json").status_code == 405
    assert api.delete(url).status_code == 405
    assert UseCase.objects.filter(pk=draft_use_case.pk).exists()


def test_other_agencies_get_404_and_reviewers_403_on_writes(
    member_b, reviewer, draft_use_case
):
    url = f"/api/v1/use-cases/{draft_use_case.pk}/"
    other = token_client(member_b)

    assert other.get(url).status_code == 404
    assert other.patch(url, {"title": "x"}, format="json").status_code == 404
    assert other.post(f"{url}policy-check/").status_code == 404
    assert other.get(f"{url}policy-results/").status_code == 404
    assert (
        token_client(reviewer).patch(url, {"title": "x"}, format="json").status_code
        == 403
    )


# --- policy checks and results -----------------------------------------------------


def test_policy_check_stores_and_returns_a_verdict(member_a, reviewer, draft_use_case):
    _policy(reviewer, [PD, SIZE])

    response = token_client(member_a).post(
        f"/api/v1/use-cases/{draft_use_case.pk}/policy-check/"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["passed"] is False
    assert body["trigger"] == "on_demand"
    assert body["use_case"] == draft_use_case.pk
    assert body["artifact_digest"] == "a" * 64
    assert body["requested_by"] == "alice"
    assert body["policies"][0]["name"] == "baseline"
    size = next(o for o in body["outcomes"] if o["rule_id"] == "size")
    assert size["status"] == "failed"
    assert size["evidence"]["parameter_count"] == 1_000_000
    assert "above the maximum 10" in size["message"]
    assert PolicyResult.objects.get(pk=body["id"]).requested_by == member_a


def test_policy_results_are_listed_per_use_case_and_read_by_id(
    member_a, member_b, reviewer, draft_use_case
):
    first = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    second = token_client(reviewer).post(
        f"/api/v1/use-cases/{draft_use_case.pk}/policy-check/"
    )
    assert second.status_code == 201

    listed = token_client(member_a).get(
        f"/api/v1/use-cases/{draft_use_case.pk}/policy-results/"
    )
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["results"]] == [
        second.json()["id"],
        first.pk,
    ]
    assert (
        token_client(member_a)
        .get(f"/api/v1/policy-results/{first.pk}/")
        .json()["passed"]
    )
    assert (
        token_client(reviewer).get(f"/api/v1/policy-results/{first.pk}/").status_code
        == 200
    )
    assert (
        token_client(member_b).get(f"/api/v1/policy-results/{first.pk}/").status_code
        == 404
    )
    assert token_client(member_b).get("/api/v1/policy-results/").json()["results"] == []


def test_policy_results_cannot_be_changed_through_the_api(member_a, draft_use_case):
    result = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    api = token_client(member_a)
    url = f"/api/v1/policy-results/{result.pk}/"

    assert api.patch(url, {"passed": False}, format="json").status_code == 405
    assert api.put(url, {"passed": False}, format="json").status_code == 405
    assert api.delete(url).status_code == 405
    assert api.post("/api/v1/policy-results/", {}, format="json").status_code == 405


# --- policies --------------------------------------------------------------------


def test_a_reviewer_writes_a_policy_and_members_cannot(
    reviewer, member_a, platform_admin, small_suite
):
    body = {
        "name": "core-quality",
        "title": "Core quality",
        "scope": "platform",
        "rules": [
            {
                "id": "mc",
                "kind": "required_evaluation",
                "suite": "small",
                "metric": "multiple_choice.acc",
                "min": 0.6,
                "max_age_days": 180,
            }
        ],
    }

    denied = token_client(member_a).post("/api/v1/policies/", body, format="json")
    created = token_client(reviewer).post("/api/v1/policies/", body, format="json")
    by_admin = token_client(platform_admin).post(
        "/api/v1/policies/", {**body, "name": "admin-policy"}, format="json"
    )

    assert denied.status_code == 403
    assert created.status_code == 201, created.content
    assert created.json()["version"] == 1
    assert created.json()["is_current"] is True
    assert created.json()["created_by"] == "rita"
    assert by_admin.status_code == 201


def test_invalid_rules_answer_400_with_the_json_path(reviewer):
    response = token_client(reviewer).post(
        "/api/v1/policies/",
        {
            "name": "broken",
            "title": "Broken",
            "scope": "platform",
            "rules": [PD, {"id": "cost", "kind": "size_cost", "max_parameters": -5}],
        },
        format="json",
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_rules"
    assert body["fields"]["rules"] == [
        {
            "code": "schema_minimum",
            "message": "rules[1].max_parameters: -5 is less than the minimum of 1",
        }
    ]


def test_members_read_the_policies_that_can_apply_to_them(
    reviewer, member_a, member_b, agency_a, agency_b
):
    _policy(reviewer, [PD], name="everyone")
    mine = _policy(reviewer, [PD], name="city-a-only", scope="agency", agency=agency_a)
    theirs = _policy(
        reviewer, [PD], name="region-b-only", scope="agency", agency=agency_b
    )
    _policy(reviewer, [PD], name="for-high", scope="risk_tier", risk_tier="high")

    def names(user):
        response = token_client(user).get("/api/v1/policies/")
        assert response.status_code == 200
        return sorted(p["name"] for p in response.json()["results"])

    assert names(member_a) == ["city-a-only", "everyone", "for-high"]
    assert names(member_b) == ["everyone", "for-high", "region-b-only"]
    assert len(names(reviewer)) == 4
    assert token_client(member_b).get(f"/api/v1/policies/{mine.pk}/").status_code == 404
    assert (
        token_client(member_a).get(f"/api/v1/policies/{theirs.pk}/").status_code == 404
    )


def test_a_new_version_replaces_the_listed_one_and_keeps_the_history(
    reviewer, member_a
):
    first = _policy(reviewer, [PD])
    api = token_client(reviewer)

    revised = api.post(
        f"/api/v1/policies/{first.pk}/versions/",
        {"rules": [SIZE], "title": "Size only"},
        format="json",
    )
    outdated = api.post(
        f"/api/v1/policies/{first.pk}/versions/", {"title": "Again"}, format="json"
    )
    denied = token_client(member_a).post(
        f"/api/v1/policies/{revised.json()['id']}/versions/",
        {"is_active": False},
        format="json",
    )

    assert revised.status_code == 201, revised.content
    assert revised.json()["version"] == 2
    assert revised.json()["scope"] == "platform"  # copied from version 1
    assert outdated.status_code == 409
    assert outdated.json()["code"] == "policy_outdated"
    assert denied.status_code == 403
    listed = token_client(member_a).get("/api/v1/policies/").json()["results"]
    assert [(p["name"], p["version"]) for p in listed] == [("baseline", 2)]
    history = token_client(member_a).get(f"/api/v1/policies/{first.pk}/versions/")
    assert [(p["version"], p["is_current"]) for p in history.json()["results"]] == [
        (2, True),
        (1, False),
    ]
    old = token_client(member_a).get(f"/api/v1/policies/{first.pk}/").json()
    assert old["rules"] == [PD]


def test_the_policy_schema_is_published(member_b):
    response = token_client(member_b).get("/api/v1/policies/schema/")

    assert response.status_code == 200
    schema = response.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$defs"]["rule"]["properties"]["kind"]["enum"] == [
        "required_evaluation",
        "licence",
        "sovereignty",
        "personal_data",
        "documentation",
        "size_cost",
        "required_suite",
        "substantial_modification",
        "quantisation",
    ]


# --- tenancy and anonymity on every endpoint --------------------------------------


def test_anonymous_callers_get_401_on_every_endpoint(anon, draft_use_case):
    result = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    uc = f"/api/v1/use-cases/{draft_use_case.pk}/"
    calls = [
        ("get", "/api/v1/use-cases/"),
        ("post", "/api/v1/use-cases/"),
        ("get", uc),
        ("patch", uc),
        ("post", f"{uc}assessment/"),
        ("post", f"{uc}policy-check/"),
        ("get", f"{uc}policy-results/"),
        ("get", "/api/v1/policy-results/"),
        ("get", f"/api/v1/policy-results/{result.pk}/"),
        ("get", "/api/v1/questionnaires/"),
        ("get", "/api/v1/policies/"),
        ("post", "/api/v1/policies/"),
        ("get", "/api/v1/policies/schema/"),
    ]
    for method, url in calls:
        assert getattr(anon, method)(url, {}, format="json").status_code == 401, url


def test_constant_queries_for_a_full_page_of_use_cases_and_policies(
    member_a, reviewer, governed_version, draft_use_case, aia_questionnaire
):
    api = token_client(reviewer)

    def count(url):
        with CaptureQueriesContext(connection) as queries:
            assert api.get(url).status_code == 200
        return len(queries)

    _policy(reviewer, [PD], name="p0")
    use_cases_one, policies_one = (
        count("/api/v1/use-cases/"),
        count("/api/v1/policies/"),
    )
    for n in range(1, 6):
        version = ModelVersionFactory(model=governed_version.model)
        use_case = use_case_services.use_case_create(
            actor=member_a,
            model_version=version,
            title=f"Use {n}",
            purpose="A purpose.",
            public_service="A service",
            valid_until=draft_use_case.valid_until,
        )
        use_case_services.use_case_assess(
            actor=member_a,
            use_case=use_case,
            answers={
                q["id"]: (
                    [q["answers"][0]["id"]]
                    if q.get("multiple")
                    else q["answers"][0]["id"]
                )
                for q in aia_questionnaire.definition["questions"]
            },
        )
        _policy(reviewer, [PD], name=f"p{n}")

    assert count("/api/v1/use-cases/") == use_cases_one
    assert count("/api/v1/policies/") == policies_one


def test_the_openapi_schema_documents_the_endpoints(member_a):
    response = token_client(member_a).get("/api/schema/?format=json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/use-cases/",
        "/api/v1/use-cases/{id}/assessment/",
        "/api/v1/use-cases/{id}/policy-check/",
        "/api/v1/use-cases/{id}/policy-results/",
        "/api/v1/policy-results/{id}/",
        "/api/v1/questionnaires/",
        "/api/v1/policies/",
        "/api/v1/policies/{id}/versions/",
        "/api/v1/policies/schema/",
    ):
        assert path in paths, path


# --- admin -----------------------------------------------------------------------


def test_the_admin_shows_but_never_changes_these_records(
    client, platform_admin, reviewer, draft_use_case, aia_questionnaire
):
    policy = _policy(reviewer, [PD])
    result = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    client.force_login(platform_admin)

    for model, pk in (
        ("policyresult", result.pk),
        ("policy", policy.pk),
        ("usecase", draft_use_case.pk),
        ("questionnaire", aia_questionnaire.pk),
    ):
        base = f"/admin/governance/{model}/"
        assert client.get(base).status_code == 200, model
        assert client.get(f"{base}add/").status_code == 403, model
        assert client.get(f"{base}{pk}/change/").status_code == 200, model
        assert client.post(f"{base}{pk}/change/", {}).status_code == 403, model
        assert client.post(f"{base}{pk}/delete/", {"post": "yes"}).status_code == 403
    assert PolicyResult.objects.filter(pk=result.pk).exists()
