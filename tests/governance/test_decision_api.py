"""The lifecycle API and the admin review queue: flows, errors and tenancy."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.utils import timezone
from rest_framework.test import APIClient

from governance.models import (
    Attestation,
    Decision,
    EvaluationRun,
    ReviewQueueItem,
    Submission,
    UseCaseStatus,
    UseCaseTransition,
    Waiver,
)
from governance.services import attestations, lifecycle
from governance.services import decisions as decision_services
from governance.services import use_cases as use_case_services
from tests.factories import MembershipFactory, ModelVersionFactory, UserFactory
from tests.governance.conftest import JUSTIFICATION, RATIONALE, TIER_ANSWERS
from tests.registry.conftest import token_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

S = UseCaseStatus


def _post(client, use_case, action: str, body=None):
    return client.post(
        f"/api/v1/use-cases/{use_case.pk}/{action}/", body or {}, format="json"
    )


# --- the flow through the API ------------------------------------------------------


def test_submit_review_and_approve_through_the_api(
    kit, maintainer_a, reviewer, api_reviewer, api_a
):
    kit.assess()
    kit.run()
    api_maintainer = token_client(maintainer_a)

    response = _post(api_maintainer, kit.use_case, "submit")
    assert response.status_code == 201, response.content
    submission = response.json()
    assert submission["number"] == 1
    assert submission["snapshot"]["model_version"]["artifact_sha256"] == "a" * 64

    response = _post(api_reviewer, kit.use_case, "start-review")
    assert response.status_code == 201, response.content
    assert response.json()["to_status"] == S.IN_REVIEW

    response = _post(api_reviewer, kit.use_case, "approve", {"rationale": RATIONALE})
    assert response.status_code == 201, response.content
    decision = response.json()
    assert decision["kind"] == "approve"
    assert decision["to_status"] == S.APPROVED
    assert decision["reviewer"] == "rita"
    assert decision["expires_at"]
    assert decision["attestation"] == (
        Attestation.objects.get(decision_id=decision["id"]).statement_sha256
    )

    history = api_a.get(f"/api/v1/use-cases/{kit.use_case.pk}/history/").json()
    assert [h["to_status"] for h in history] == [S.SUBMITTED, S.IN_REVIEW, S.APPROVED]
    assert history[-1]["decision"] == decision["id"]

    now = timezone.now().isoformat().replace("+00:00", "Z")
    served = api_a.get("/api/v1/in-service/", {"at": now}).json()
    assert served["count"] == 1
    [entry] = served["results"]
    assert entry["use_case"] == kit.use_case.pk
    assert entry["model_version"] == kit.use_case.model_version_id
    assert entry["decision"] == decision["id"]
    before = api_a.get("/api/v1/in-service/", {"at": "2020-01-01T00:00:00Z"}).json()
    assert before == {"at": "2020-01-01T00:00:00Z", "count": 0, "results": []}


def test_the_in_service_instant_accepts_offsets_and_refuses_naive_or_bad_input(
    kit, api_a
):
    kit.approved()
    decided = Decision.objects.get().decided_at + timedelta(seconds=1)
    local = decided.astimezone(timezone.get_fixed_timezone(120)).isoformat()
    # An unencoded "+" arrives as a space; the instant is still understood.
    response = api_a.get(f"/api/v1/in-service/?at={local}")
    assert response.status_code == 200 and response.json()["count"] == 1
    for bad in ("2026-11-28T12:00:00", "yesterday", "2026-13-40T00:00:00Z", ""):
        response = api_a.get("/api/v1/in-service/", {"at": bad})
        assert response.status_code == 400, bad
        assert response.json()["fields"]["at"]
    # An offset PostgreSQL would refuse (beyond 15:59) is the same instant in
    # UTC (found by tests/test_schema_fuzz.py); one past year 1 is refused.
    far = api_a.get("/api/v1/in-service/", {"at": "0332-11-25T05:24:34+21:49"})
    assert far.status_code == 200 and far.json()["count"] == 0
    assert far.json()["at"].startswith("0332-11-24T07:35:34")
    early = api_a.get("/api/v1/in-service/", {"at": "0001-01-01T00:00:00+21:49"})
    assert early.status_code == 400 and early.json()["fields"]["at"]


def test_a_waiver_is_given_with_the_approval_and_listed(kit, api_reviewer, api_a):
    use_case = kit.in_review(acc=0.3)
    body = {
        "rationale": RATIONALE,
        "waiver": {"rule_ids": ["baseline/mc-acc"], "justification": JUSTIFICATION},
    }
    response = _post(api_reviewer, use_case, "approve", body)
    assert response.status_code == 201, response.content
    waiver = response.json()["waiver"]
    assert waiver["rule_ids"] == ["baseline/mc-acc"]
    assert waiver["granted_by"] == "rita"

    listed = api_a.get("/api/v1/waivers/").json()["results"]
    assert [w["id"] for w in listed] == [waiver["id"]]


def test_errors_carry_their_rule_and_status(kit, api_reviewer, api_a, platform_admin):
    use_case = kit.in_review(acc=0.3)

    response = _post(api_reviewer, use_case, "approve", {"rationale": RATIONALE})
    assert response.status_code == 403
    assert response.json()["code"] == "policy_failed"

    response = _post(api_a, use_case, "approve", {"rationale": RATIONALE})
    assert response.status_code == 403
    assert response.json()["code"] == "four_eyes_reviewer_only"

    response = _post(token_client(platform_admin), use_case, "reject", {
        "rationale": RATIONALE
    })  # fmt: skip
    assert response.status_code == 403
    assert response.json()["code"] == "four_eyes_reviewer_only"

    response = _post(api_reviewer, use_case, "suspend", {"rationale": RATIONALE})
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    assert "in_review → suspended" in response.json()["message"]

    response = _post(api_reviewer, use_case, "reject", {})
    assert response.status_code == 400
    assert "rationale" in response.json()["fields"]

    response = _post(api_reviewer, use_case, "reject", {
        "rationale": RATIONALE,
        "waiver": {"rule_ids": ["mc-acc"], "justification": JUSTIFICATION},
    })  # fmt: skip
    assert response.status_code == 400
    assert "waiver" in response.json()["fields"]

    response = _post(api_reviewer, use_case, "approve", {
        "rationale": RATIONALE,
        "waiver": {"rule_ids": ["mc-acc"], "justification": "short"},
    })  # fmt: skip
    assert response.status_code == 400
    assert not Decision.objects.exists()


def test_every_post_action_is_a_transition_through_the_api(kit, api_reviewer):
    use_case = kit.approved()
    for action, status in (
        ("suspend", S.SUSPENDED),
        ("reinstate", S.APPROVED),
        ("retire", S.RETIRED),
    ):
        response = _post(api_reviewer, use_case, action, {"rationale": RATIONALE})
        assert response.status_code == 201, response.content
        assert response.json()["to_status"] == status
    assert kit.refresh().status == S.RETIRED


def test_request_changes_and_reject_through_the_api(kit, maintainer_a, api_reviewer):
    use_case = kit.in_review()
    response = _post(api_reviewer, use_case, "request-changes", {
        "rationale": "Say who reads the drafts."
    })  # fmt: skip
    assert response.status_code == 201
    assert kit.refresh().status == S.CHANGES_REQUESTED
    assert _post(token_client(maintainer_a), use_case, "submit").status_code == 201
    assert _post(api_reviewer, use_case, "start-review").status_code == 201
    response = _post(api_reviewer, use_case, "reject", {"rationale": RATIONALE})
    assert response.status_code == 201
    assert kit.refresh().status == S.REJECTED


def test_nothing_can_be_deleted_through_the_api(kit, api_reviewer):
    kit.approved()
    decision = Decision.objects.get()
    for path in (
        f"/api/v1/decisions/{decision.pk}/",
        f"/api/v1/submissions/{decision.submission_id}/",
        f"/api/v1/attestations/{decision.attestation.pk}/",
    ):
        assert api_reviewer.delete(path).status_code == 405
    assert Decision.objects.filter(pk=decision.pk).exists()


# --- tenancy on every endpoint -----------------------------------------------------


@pytest.fixture
def decided(kit, reviewer):
    """An approved use case of agency A with a waiver and attested evidence."""
    use_case = kit.in_review(acc=0.3)
    run = EvaluationRun.objects.get()
    attestations.attestation_for_run(run=run)
    decision = decision_services.use_case_approve(
        actor=reviewer,
        use_case=use_case,
        rationale=RATIONALE,
        waiver_rule_ids=["mc-acc"],
        waiver_justification=JUSTIFICATION,
    )
    return {
        "use_case": use_case,
        "run": run,
        "decision": decision,
        "submission": Submission.objects.get(),
        "waiver": Waiver.objects.get(),
        "attestation": decision.attestation,
    }


def _reads(d) -> dict[str, str]:
    """Every GET endpoint of a record of agency A."""
    return {
        "decision": f"/api/v1/decisions/{d['decision'].pk}/",
        "decision attestation": f"/api/v1/decisions/{d['decision'].pk}/attestation/",
        "submission": f"/api/v1/submissions/{d['submission'].pk}/",
        "waiver": f"/api/v1/waivers/{d['waiver'].pk}/",
        "attestation": f"/api/v1/attestations/{d['attestation'].pk}/",
        "history": f"/api/v1/use-cases/{d['use_case'].pk}/history/",
    }


LISTS = [
    "/api/v1/decisions/",
    "/api/v1/submissions/",
    "/api/v1/waivers/",
    "/api/v1/attestations/",
]
ACTIONS = [
    "submit",
    "start-review",
    "approve",
    "reject",
    "request-changes",
    "suspend",
    "reinstate",
    "retire",
]


def test_anonymous_callers_get_401_everywhere(decided):
    anon = APIClient()
    for name, path in _reads(decided).items():
        assert anon.get(path).status_code == 401, name
    for path in [*LISTS, "/api/v1/in-service/"]:
        assert anon.get(path).status_code == 401, path
    for action in ACTIONS:
        response = _post(anon, decided["use_case"], action, {"rationale": RATIONALE})
        assert response.status_code == 401, action


def test_another_agency_gets_404_and_empty_lists(decided, api_b):
    for name, path in _reads(decided).items():
        response = api_b.get(path)
        assert response.status_code == 404, name
    for path in ["/api/v1/decisions/", "/api/v1/submissions/", "/api/v1/waivers/"]:
        assert api_b.get(path).json()["results"] == [], path
    assert api_b.get("/api/v1/in-service/").json()["count"] == 0
    for action in ACTIONS:
        response = _post(api_b, decided["use_case"], action, {"rationale": RATIONALE})
        assert response.status_code == 404, action
    assert kit_status(decided) == S.APPROVED
    # The approval made the model public: its evaluation evidence is public
    # (transparency), the use case's records are not.
    run = decided["run"]
    assert api_b.get(f"/api/v1/evaluations/{run.pk}/attestation/").status_code == 200
    listed = api_b.get("/api/v1/attestations/").json()["results"]
    assert [(a["run"], a["decision"]) for a in listed] == [(run.pk, None)]


def test_a_private_models_run_attestation_is_hidden_from_other_agencies(
    kit, api_a, api_b
):
    run = kit.run()
    attestations.attestation_for_run(run=run)
    path = f"/api/v1/evaluations/{run.pk}/attestation/"
    assert api_b.get(path).status_code == 404
    assert api_b.get("/api/v1/attestations/").json()["results"] == []
    assert APIClient().get(path).status_code == 401
    assert api_a.get(path).status_code == 200


def kit_status(decided) -> str:
    decided["use_case"].refresh_from_db()
    return decided["use_case"].status


@pytest.mark.parametrize("who", ["api_a", "api_reviewer", "api_admin"])
def test_the_agency_and_oversight_read_every_record(decided, who, request):
    client = request.getfixturevalue(who)
    for name, path in _reads(decided).items():
        response = client.get(path)
        assert response.status_code == 200, (name, response.content)
    for path in LISTS:
        assert len(client.get(path).json()["results"]) >= 1, path
    assert client.get("/api/v1/in-service/").json()["count"] == 1


def test_lists_show_each_agency_only_its_own(decided, api_b, member_b, reviewer):
    # Agency B submits a use case of its own: A sees none of it.
    version = ModelVersionFactory(
        model__agency=member_b.membership.agency,
        artifact_state="available",
        artifact_digest="d" * 64,
        kind="causal_lm_kv",
    )
    colleague = MembershipFactory(
        user=UserFactory(username="berta"), agency=member_b.membership.agency
    ).user
    theirs = use_case_services.use_case_create(
        actor=member_b,
        model_version=version,
        title="Routing letters",
        purpose="Route letters to the right office.",
        public_service="Mail room, Region B",
        valid_until=timezone.localdate() + timedelta(days=100),
    )
    use_case_services.use_case_assess(
        actor=member_b, use_case=theirs, answers=TIER_ANSWERS["minimal"]
    )
    lifecycle.use_case_submit(actor=colleague, use_case=theirs)

    mine = token_client(decided["decision"].submission.submitted_by)
    own = {s["use_case"] for s in mine.get("/api/v1/submissions/").json()["results"]}
    assert own == {decided["use_case"].pk}
    others = {
        s["use_case"] for s in api_b.get("/api/v1/submissions/").json()["results"]
    }
    assert others == {theirs.pk}
    everyone = token_client(reviewer).get("/api/v1/submissions/").json()["results"]
    assert {s["use_case"] for s in everyone} == {decided["use_case"].pk, theirs.pk}


def test_decisions_filter_by_use_case_and_kind(decided, api_reviewer):
    pk = decided["use_case"].pk
    found = api_reviewer.get("/api/v1/decisions/", {"use_case": pk, "kind": "approve"})
    assert [d["id"] for d in found.json()["results"]] == [decided["decision"].pk]
    none = api_reviewer.get("/api/v1/decisions/", {"kind": "reject"})
    assert none.json()["results"] == []


# --- the admin review queue ---------------------------------------------------------


@pytest.fixture
def staff_reviewer(reviewer):
    reviewer.is_staff = True
    reviewer.save(update_fields=["is_staff"])
    return reviewer


def _queue_url(item=None) -> str:
    if item is None:
        return "/admin/governance/reviewqueueitem/"
    return f"/admin/governance/reviewqueueitem/{item.pk}/change/"


def test_the_review_queue_shows_the_evidence_beside_the_decision_form(
    kit, staff_reviewer, client
):
    use_case = kit.in_review()
    client.force_login(staff_reviewer)

    listing = client.get(_queue_url())
    assert listing.status_code == 200
    assert use_case.title in listing.content.decode()

    page = client.get(_queue_url(use_case))
    assert page.status_code == 200
    html = page.content.decode()
    run = EvaluationRun.objects.get()
    assert "baseline/mc-acc" in html or "mc-acc" in html
    assert f"Run {run.pk}" in html
    assert "multiple_choice.acc=0.9" in html
    assert 'name="decision-rationale"' in html
    assert "Record the decision" in html


def test_a_decision_in_the_admin_goes_through_the_service(kit, staff_reviewer, client):
    use_case = kit.in_review()
    client.force_login(staff_reviewer)

    response = client.post(
        _queue_url(use_case),
        {"decision-action": "approve", "decision-rationale": RATIONALE},
    )
    assert response.status_code == 302
    assert kit.refresh().status == S.APPROVED
    decision = Decision.objects.get()
    assert decision.reviewer == staff_reviewer
    assert decision.attestation  # signed like any other decision
    assert UseCaseTransition.objects.filter(decision=decision).exists()
    # Approved, it leaves the queue.
    assert _queue_url(use_case) not in client.get(_queue_url()).content.decode()


def test_the_admin_shows_a_refusal_and_writes_nothing(kit, platform_admin, client):
    use_case = kit.in_review()
    client.force_login(platform_admin)

    response = client.post(
        _queue_url(use_case),
        {"decision-action": "approve", "decision-rationale": RATIONALE},
    )
    assert response.status_code == 200
    assert "four_eyes_reviewer_only" in response.content.decode()
    assert not Decision.objects.exists()
    assert kit.refresh().status == S.IN_REVIEW


def test_the_admin_start_review_action_calls_the_service(kit, staff_reviewer, client):
    kit.assess()
    kit.run()
    kit.submit()
    client.force_login(staff_reviewer)
    response = client.post(
        _queue_url(),
        {"action": "start_review", "_selected_action": [kit.use_case.pk]},
    )
    assert response.status_code == 302
    assert kit.refresh().status == S.IN_REVIEW


def test_agency_staff_do_not_see_the_queue(kit, member_a, client):
    member_a.is_staff = True
    member_a.save(update_fields=["is_staff"])
    kit.in_review()
    client.force_login(member_a)
    assert client.get(_queue_url()).status_code == 403


def test_no_record_can_be_deleted_in_the_admin(rf, platform_admin):
    request = rf.get("/admin/")
    request.user = platform_admin
    for model in (ReviewQueueItem, Submission, UseCaseTransition, Waiver, Decision):
        model_admin = admin.site._registry[model]
        assert not model_admin.has_delete_permission(request), model
        assert not model_admin.has_add_permission(request), model
    assert not admin.site._registry[Attestation].has_delete_permission(request)


def test_the_decision_list_costs_the_same_queries_for_one_or_many(
    kit, reviewer, api_reviewer
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    use_case = kit.approved()

    def count() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            response = api_reviewer.get("/api/v1/decisions/")
        return len(queries), len(response.json()["results"])

    few = count()
    decision_services.use_case_suspend(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    decision_services.use_case_reinstate(
        actor=reviewer, use_case=use_case, rationale=RATIONALE
    )
    many = count()
    assert (few[1], many[1]) == (1, 3)
    assert many[0] == few[0]


def test_reviewers_read_the_records_in_the_admin_and_agencies_do_not(
    kit, staff_reviewer, member_a, client
):
    kit.approved()
    decision = Decision.objects.get()
    client.force_login(staff_reviewer)
    assert client.get("/admin/governance/decision/").status_code == 200
    page = client.get(f"/admin/governance/decision/{decision.pk}/change/")
    assert page.status_code == 200 and RATIONALE in page.content.decode()
    attestation = f"/admin/governance/attestation/{decision.attestation.pk}/change/"
    assert client.get(attestation).status_code == 200

    member_a.is_staff = True
    member_a.save(update_fields=["is_staff"])
    client.force_login(member_a)
    assert client.get("/admin/governance/decision/").status_code == 403
