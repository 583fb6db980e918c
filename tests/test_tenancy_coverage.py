"""Every /api/v1/ route that names an object has a cross-agency 404 test.

The test walks the URL configuration, so a tenant route added tomorrow fails
here until someone names the test proving that another agency's member gets
404 on it (``CROSS_AGENCY``), or says in ``NOT_TENANT`` why the route holds
no agency's private data.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests.test_tenancy_extra import COVERED_ROUTES as EXTRA_ROUTES

PREFIX = "api/v1/"

# Route name -> "module::test" proving that agency B's member gets 404 on
# agency A's object at that route.
TENANCY = "tests.registry.test_api_tenancy::test_c1_another_agencys_member_gets_404"
DECISIONS = (
    "tests.governance.test_decision_api::test_another_agency_gets_404_and_empty_lists"
)
EVALUATIONS = (
    "tests.governance.test_evaluations"
    "::test_c1_another_agencys_member_cannot_evaluate_or_see_runs"
)
USE_CASES = (
    "tests.governance.test_usecase_api"
    "::test_other_agencies_get_404_and_reviewers_403_on_writes"
)
SCHEDULES = (
    "tests.governance.test_schedules"
    "::test_api_creates_edits_and_keeps_the_periodic_task_in_step"
)
LINEAGE = (
    "tests.registry.test_lineage::test_api_lineage_of_an_invisible_version_is_not_found"
)

SUITES = (
    "tests.governance.test_suites"
    "::test_c1_a_private_suite_is_invisible_and_unusable_elsewhere"
)

CROSS_AGENCY = {
    "suite-detail": SUITES,
    "suite-versions": SUITES,
    "token-detail": TENANCY,
    "agency-detail": TENANCY,
    "membership-list": TENANCY,
    "membership-detail": TENANCY,
    "dataset-detail": TENANCY,
    "dataset-version-detail": TENANCY,
    "model-detail": TENANCY,
    "model-version-detail": TENANCY,
    "model-version-download": (
        "tests.registry.test_artifacts"
        "::test_c1_other_agency_cannot_upload_or_read_a_private_version"
    ),
    "dataset-version-download": (
        "tests.registry.test_artifacts::test_dataset_file_upload_and_download"
    ),
    "dataset-version-file-reference": (
        "tests.test_tenancy_extra"
        "::test_dataset_file_reference_to_another_agencys_version_is_404"
    ),
    **{
        name: (
            "tests.registry.test_resumable_upload"
            "::test_other_agency_gets_404_on_every_upload_route"
        )
        for name in (
            "model-version-uploads",
            "model-version-upload-detail",
            "model-version-upload-part",
            "model-version-upload-complete",
        )
    },
    "model-version-lineage": LINEAGE,
    "dataset-version-lineage": LINEAGE,
    "model-version-evaluations": EVALUATIONS,
    "model-version-modification": (
        "tests.governance.test_modifications"
        "::test_another_agency_gets_404_on_the_modification"
    ),
    "model-version-derive": (
        "tests.governance.test_derivations"
        "::test_another_agencys_version_is_not_found_even_when_public"
    ),
    "model-version-quantisation-evidence": (
        "tests.governance.test_derivations"
        "::test_evidence_without_a_base_is_empty_and_private_versions_are_hidden"
    ),
    "model-version-derivation-evidence": (
        "tests.governance.test_derivation_evidence"
        "::test_the_neutral_name_hides_another_agencys_private_version"
    ),
    "evaluation-detail": EVALUATIONS,
    "evaluation-cancel": EVALUATIONS,
    "evaluation-attestation": (
        "tests.governance.test_decision_api"
        "::test_a_private_models_run_attestation_is_hidden_from_other_agencies"
    ),
    "evaluation-openlineage": (
        "tests.governance.test_mlflow_registry"
        "::test_a_runs_lineage_is_an_openlineage_event_hidden_from_other_agencies"
    ),
    "evaluation-schedule-detail": SCHEDULES,
    "evaluation-schedule-ticks": SCHEDULES,
    "use-case-detail": USE_CASES,
    "use-case-policy-check": USE_CASES,
    "use-case-policy-results": USE_CASES,
    "use-case-assessment": "tests.governance.test_risk::test_assessment_api_tenancy",
    "policy-detail": (
        "tests.governance.test_usecase_api"
        "::test_members_read_the_policies_that_can_apply_to_them"
    ),
    "policy-result-detail": (
        "tests.governance.test_usecase_api"
        "::test_policy_results_are_listed_per_use_case_and_read_by_id"
    ),
    **{
        f"use-case-{action}": DECISIONS
        for action in (
            "submit",
            "start-review",
            "approve",
            "reject",
            "request-changes",
            "suspend",
            "reinstate",
            "retire",
            "history",
        )
    },
    "decision-detail": DECISIONS,
    "decision-attestation": DECISIONS,
    "submission-detail": DECISIONS,
    "waiver-detail": DECISIONS,
    "attestation-detail": DECISIONS,
    **{
        name: (
            "tests.governance.test_exports"
            "::test_c1_another_agency_gets_404_on_the_exports_of_private_objects"
        )
        for name in ("model-version-export", "use-case-export")
    },
    "audit:event-detail": (
        "tests.audit.test_audit"
        "::test_members_see_their_agency_events_and_oversight_sees_all"
    ),
    **{
        name: "tests.test_tenancy_extra" for name in EXTRA_ROUTES
    },  # the module's tests, one per route
    **{
        name: (
            "tests.notifications.test_api"
            "::test_c1_another_agencys_maintainer_gets_404_on_webhooks"
        )
        for name in (
            "webhook-detail",
            "webhook-rotate-secret",
            "webhook-ping",
            "webhook-deliveries",
        )
    },
}

# Object routes that serve no agency's private data, and why.
NOT_TENANT = {
    "licence-detail": "licences are shared reference data",
    "questionnaire-detail": "impact questionnaires are published to every agency",
    "worker-ping-result": "a system health probe keyed by a Celery task id",
}


def _object_routes(resolver: URLResolver, prefix: str = "", namespace: str = ""):
    """(route, name) for every pattern with a path parameter, suffixes aside."""
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = namespace + (f"{entry.namespace}:" if entry.namespace else "")
            yield from _object_routes(entry, route, inner)
        elif (
            isinstance(entry, URLPattern)
            and "format" not in route
            and re.search(r"<[^>]+>", route)
        ):
            yield route, namespace + (entry.name or "")


def api_object_routes() -> dict[str, str]:
    """Route name (without the ``v1:`` namespace) -> route, under /api/v1/."""
    return {
        name.removeprefix("v1:"): route
        for route, name in _object_routes(get_resolver())
        if route.startswith(PREFIX)
    }


ROUTES = api_object_routes()


def test_the_walk_finds_the_object_routes():
    assert {"model-detail", "evaluation-items", "audit:event-detail"} <= set(ROUTES)
    assert len(ROUTES) > 40


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_object_route_has_a_cross_agency_test(name):
    assert name in CROSS_AGENCY or name in NOT_TENANT, (
        f"{ROUTES[name]} ({name}) has no test that another agency's member gets "
        "404: add one and name it in tests/test_tenancy_coverage.py, or list the "
        "route in NOT_TENANT with the reason it holds no agency's data"
    )


def test_every_route_is_either_covered_or_allowed_not_both():
    assert not set(CROSS_AGENCY) & set(NOT_TENANT)
    assert set(CROSS_AGENCY) | set(NOT_TENANT) <= set(ROUTES), "stale entries"


def _static_segment(route: str) -> str:
    """The last path segment of a route that is not a parameter: 'items', 'models'."""
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "<param>", route)
    parts = [p for p in re.sub(r"[\^$\\]", "", route).split("/") if p]
    return next(p for p in reversed(parts) if "<" not in p)


@pytest.mark.parametrize("name", sorted(CROSS_AGENCY))
def test_the_named_cross_agency_test_exists_and_visits_the_route(name):
    module_name, _, function = CROSS_AGENCY[name].partition("::")
    module = importlib.import_module(module_name)
    if function:
        assert callable(getattr(module, function, None)), CROSS_AGENCY[name]
    else:
        assert name in module.COVERED_ROUTES
    source = inspect.getsource(module)
    segment = _static_segment(ROUTES[name])
    assert re.search(rf"\b{re.escape(segment)}\b", source), (
        f"{module_name} never mentions '{segment}' of {ROUTES[name]}"
    )
