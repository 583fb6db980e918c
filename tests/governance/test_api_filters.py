"""Governance filters: no existence oracle between agencies (SECURITY C13, C2).

``/submissions/?use_case=`` (and the other id filters) answered 400
``invalid_choice`` for an unused id but 200 and empty for another agency's:
enough to enumerate its use cases, policy results, runs and decisions. Every
id filter now answers an id the caller cannot see exactly as one never used.
This file runs on SQLite too (``tests/config/test_filters.py``).
"""

from __future__ import annotations

import pytest

from governance.models import Attestation, EvaluationSuite, PolicyResult, Waiver
from governance.services import decisions as decision_services
from registry.models import AIModel, Visibility
from tests.governance.conftest import JUSTIFICATION, RATIONALE

pytestmark = pytest.mark.django_db

API = "/api/v1"
UNUSED = 10**12


@pytest.fixture
def evidence(kit):
    """Agency A's use case approved with a waiver: every governed row exists."""
    use_case = kit.in_review(acc=0.3)
    decision = decision_services.use_case_approve(
        actor=kit.reviewers[0],
        use_case=use_case,
        rationale=RATIONALE,
        waiver_rule_ids=["baseline/mc-acc"],
        waiver_justification=JUSTIFICATION,
    )
    run = use_case.model_version.evaluations.get()
    # Submitting published the version; agency A takes it private again, so
    # agency B may see none of these rows.
    AIModel.objects.filter(versions=use_case.model_version).update(
        visibility=Visibility.PRIVATE
    )
    return {
        "use_case": use_case.pk,
        "model_version": use_case.model_version_id,
        "policy_result": PolicyResult.objects.filter(use_case=use_case).latest("pk").pk,
        "run": run.pk,
        "decision": decision.pk,
    }


# (list, parameter, does agency A's own filtered list hold a row?)
ID_FILTERS = [
    ("submissions", "use_case", True),
    ("waivers", "use_case", True),
    ("waivers", "policy_result", True),
    ("attestations", "run", False),
    ("attestations", "decision", True),
    ("policy-results", "use_case", True),
    ("policy-results", "model_version", True),
    ("decisions", "use_case", True),
    ("decisions", "model_version", True),
    ("use-cases", "model_version", True),
    ("evaluations", "model_version", True),
]


@pytest.mark.parametrize(
    ("resource", "name", "owner_sees_rows"),
    ID_FILTERS,
    ids=[f"{r}?{n}" for r, n, _ in ID_FILTERS],
)
def test_c13_another_agencys_id_answers_like_an_unused_one(
    evidence, api_a, api_b, resource, name, owner_sees_rows
):
    other = evidence[name]

    seen = api_b.get(f"{API}/{resource}/", {name: other})
    unused = api_b.get(f"{API}/{resource}/", {name: UNUSED})

    assert seen.status_code == unused.status_code == 200, seen.content
    assert seen.json() == unused.json()
    assert seen.json()["results"] == []
    # The filter still works for those who may see the object.
    owned = api_a.get(f"{API}/{resource}/", {name: other})
    assert owned.status_code == 200
    assert bool(owned.json()["results"]) is owner_sees_rows, owned.json()


def test_c2_lists_filtered_with_another_agencys_ids_show_none_of_its_rows(
    evidence, api_b
):
    assert Waiver.objects.exists() and Attestation.objects.exists()
    for resource, name, _ in ID_FILTERS:
        response = api_b.get(f"{API}/{resource}/", {name: evidence[name]})
        assert response.status_code == 200
        assert response.json()["results"] == [], (resource, name)
        assert api_b.get(f"{API}/{resource}/").json()["results"] == [], resource


def test_c13_suite_filter_matches_only_suites_the_caller_may_see(
    evidence, kit, agency_b, api_a, api_reviewer
):
    run = kit.suite.runs.get()
    private = EvaluationSuite.objects.create(
        name="b-private",
        version="1",
        agency=agency_b,
        licence=kit.suite.licence,
        tasks=[],
    )
    run.suite = private
    run.save(update_fields=["suite"])

    # A sees its own run, but not agency B's suite: the filter does not
    # match through it, exactly as for a suite name never used.
    hidden = api_a.get(f"{API}/evaluations/", {"suite": "b-private"})
    unused = api_a.get(f"{API}/evaluations/", {"suite": "no-such-suite"})
    assert hidden.status_code == unused.status_code == 200
    assert hidden.json() == unused.json()
    listed = api_reviewer.get(f"{API}/evaluations/", {"suite": "b-private"})
    assert [row["id"] for row in listed.json()["results"]] == [run.pk]
