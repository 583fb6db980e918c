"""The API keeps its own OpenAPI schema (SECURITY C12, C10; issue 9 item 8).

Schemathesis loads the schema the server serves (``/api/schema/``), then for
every operation generates valid and invalid requests with Hypothesis and sends
them in-process to the Django WSGI application, once with a token of agency A
and once with a token of agency B (two agencies, a small catalogue each).
Every response goes through the checks of ``schemathesis run --checks all``
that apply to one request at a time, and through a tenancy check of our own:
no response to one agency names the other agency's private objects.

Failures are collected over all operations and reported together, one line
per (operation, check), so one run shows everything that is wrong.

What is excluded, and why (nothing else is):

- ``use_after_free`` and ``ensure_resource_availability`` are stateful checks:
  they need a recorded chain of calls (create, then delete, then read) that
  only ``schemathesis run``'s stateful phase builds. The API has no DELETE of
  catalogue records, and the tenancy tests cover deletes of tokens/members.
- ``object_level_authorization`` also needs the stateful phase (it replays
  one user's recorded objects with another's credentials); the tenancy check
  below and tests/registry/test_api_tenancy.py cover what it would.
- ``max_response_time`` is a latency budget, not a conformance check; the
  shared 2-core test machine makes it meaningless here (the load tests in
  bench/ measure latency).
- ``allow_header_conformance`` (the Allow header of a 405) is not run yet.
- A schema-valid request refused with 400 only for the field error codes in
  ``STATE_DEPENDENT_CODES`` is not
  counted as "valid request rejected"; why is written next to each set.
- An operation with nothing that can be made invalid yields no negative case
  (Hypothesis' Unsatisfiable): that operation's negative mode is skipped.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from knox.models import AuthToken
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.core.failures import FailureGroup

from governance.services import use_cases as use_case_services
from tests.governance.conftest import *  # noqa: F403  (people, suites, policies)
from tests.registry.api_catalogue import build_catalogue

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

# Examples per operation, per generation mode, per agency token. The whole
# module takes about three minutes on the shared 2-core test machine.
MAX_EXAMPLES = 6

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    missing_required_header,
    unsupported_method,
    ignored_auth,
]

# Operations left out of the run, each with its reason. Keep this empty
# unless a reason is written down here and in the report of the change.
EXCLUDED_OPERATIONS: dict[str, str] = {}


SERVER_ERRORS: list[str] = []


def _remember_server_error(sender, request, **kwargs):
    import sys

    SERVER_ERRORS.append(repr(sys.exc_info()[1])[:300])


@pytest.fixture
def wsgi_app():
    """The Django WSGI application, sharing the test's database transaction.

    Like Django's test client, requests must not close the test's connection.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    signals.got_request_exception.connect(_remember_server_error)
    try:
        yield WSGIHandler()
    finally:
        signals.got_request_exception.disconnect(_remember_server_error)
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _token(user) -> str:
    return AuthToken.objects.create(user)[1]


def _private_names(catalogue, use_case_title: str) -> dict[str, list[str]]:
    """JSON string values that only the owning agency may ever see."""
    return {
        "a": [
            json.dumps(catalogue.dataset_a.slug),
            json.dumps(catalogue.dataset_a.name),
            json.dumps(catalogue.model_a.slug),
            json.dumps(catalogue.model_a.name),
        ],
        "b": [
            json.dumps(catalogue.dataset_b.slug),
            json.dumps(catalogue.dataset_b.name),
            json.dumps(catalogue.model_b.slug),
            json.dumps(catalogue.model_b.name),
            json.dumps(use_case_title),
        ],
    }


def _use_case_of(user, version, title: str):
    from datetime import timedelta

    from django.utils import timezone

    return use_case_services.use_case_create(
        actor=user,
        model_version=version,
        title=title,
        purpose="Sort letters about parking permits.",
        public_service="Parking permits",
        affected_people="Residents who write about parking",
        decision_informed="None: staff decide.",
        human_oversight="A clerk reads every suggestion.",
        valid_until=timezone.localdate() + timedelta(days=365),
    )


# Field error codes of a 400 that a schema cannot foresee: they depend on the
# rows in the database, not on the shape of the request (an id that names no
# object the caller may use, a licence expression the registry does not know,
# a name already taken, a date that must lie in the future, a licence that must
# be registered first, answers that must fit the questionnaire version stored
# in the database). A schema-valid request refused with only these codes is not
# a "valid request rejected".
STATE_DEPENDENT_CODES = {
    "does_not_exist",
    "invalid_licence",
    "not_registered",
    "unique",
    "duplicate",
    "in_past",
    "unknown_question",
    "missing_answer",
    "invalid_answer",
    # An agency suite's checks read its dataset versions' stored files and
    # datasheets, the metrics its chosen tasks report, and who owns a name.
    "dataset_file_missing",
    "suite_data_invalid",
    "datasheet_missing",
    "dataset_not_public",
    "duplicate_task_name",
    "unknown_metric",
    "invalid_threshold",
    # An audit proof between tree sizes the log does not (yet) have.
    "no_such_tree",
    # Not state but a rule on every string: NUL is refused anywhere (docs/api.md);
    # OpenAPI can only say so with a pattern on each string, which the schema
    # does not repeat.
    "null_characters_not_allowed",
}




def _error_codes(body) -> set[str]:
    codes: set[str] = set()
    if isinstance(body, dict):
        if isinstance(body.get("code"), str) and "message" in body:
            codes.add(body["code"])
        for value in body.values():
            codes |= _error_codes(value)
    elif isinstance(body, list):
        for item in body:
            codes |= _error_codes(item)
    return codes


def _json_or_none(response):
    try:
        return response.json()
    except ValueError:
        return None


def _rejected_for_state(failure, response) -> bool:
    if failure.title != "Schema-valid request rejected":
        return False
    if response.status_code != 400:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    field_codes = _error_codes(body.get("fields", {}))
    return bool(field_codes) and field_codes <= STATE_DEPENDENT_CODES


def _run_operation(operation, mode, token, others_private, failures):
    """Fuzz one operation in one mode with one token; collect failures."""
    headers = {"Authorization": f"Token {token}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        # Every case starts from the same catalogue: what one request
        # writes (or a failed statement) is rolled back before the next.
        savepoint = transaction.savepoint()
        try:
            response = case.call(headers=headers)
        finally:
            transaction.savepoint_rollback(savepoint)
        key = f"{operation.label} [{mode.value}]"
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                if _rejected_for_state(failure, response):
                    continue
                failures[(key, failure.title)].append(
                    f"{response.status_code} {case.as_curl_command(headers)}"
                    f"\n    {failure.message[:300]} {SERVER_ERRORS[-1:]}"
                    f"\n    {response.text[:300]}"
                    f"\n    codes: {sorted(_error_codes(_json_or_none(response)))}"
                )
        text = response.text
        for name in others_private:
            if name in text:
                failures[(key, "cross-tenant leak")].append(
                    f"{name} in {response.status_code} "
                    f"{case.as_curl_command(headers)}"
                )

    try:
        run()
    except Unsatisfiable:
        # Nothing in this operation can be made invalid (no parameters, no
        # body): Hypothesis finds no negative case, which is not a failure.
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_c12_schemathesis_two_agencies_conform_and_leak_nothing(
    wsgi_app,
    member_a,
    member_b,
    small_suite,
    baseline_policy,
    aia_questionnaire,
    make_run,
):
    catalogue = build_catalogue(
        member_a.membership.agency, member_b.membership.agency, member_a, member_b
    )
    secret_title = "Beta confidential parking triage"
    _use_case_of(member_b, catalogue.version_b, secret_title)
    _use_case_of(member_a, catalogue.version_a, "Alpha parking triage")
    for version in (catalogue.version_a, catalogue.version_b):
        make_run(version, small_suite, metrics={"multiple_choice.acc": 0.75})
    private = _private_names(catalogue, secret_title)
    tokens = {"a": _token(member_a), "b": _token(member_b)}
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json",
        wsgi_app,
        headers={"Authorization": f"Token {tokens['a']}"},
    )
    failures: dict[tuple[str, str], list[str]] = defaultdict(list)
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in EXCLUDED_OPERATIONS:
            continue
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for agency, other in (("a", "b"), ("b", "a")):
                _run_operation(
                    operation, mode, tokens[agency], private[other], failures
                )
    assert operations > 40
    report = "\n".join(
        f"{key} -- {title} ({len(cases)}x)\n  {cases[0]}"
        for (key, title), cases in sorted(failures.items())
    )
    assert not failures, f"{len(failures)} failing (operation, check):\n{report}"


# --- the defects the run found, pinned down one by one ------------------------


def test_c10_agency_slug_with_nul_answers_400_not_500(api_a):
    response = api_a.post(
        "/api/v1/use-cases/", {"agency": "city\x00-a", "title": "x"}, format="json"
    )
    assert response.status_code == 400
    codes = [item["code"] for item in response.json()["fields"]["agency"]]
    assert codes == ["null_characters_not_allowed"]


def test_c12_page_size_outside_the_schema_answers_400(api_a):
    for value in ("0", "-3", "ten", "1.5", ""):
        response = api_a.get("/api/v1/models/", {"page_size": value})
        assert response.status_code == 400, value
        assert response.json()["fields"]["page_size"][0]["code"] == "invalid"
    assert api_a.get("/api/v1/models/", {"page_size": "5000"}).status_code == 200


def test_c12_error_fields_is_always_an_object(api_a):
    response = api_a.get("/api/v1/models/", {"search": "a\x00b"})
    assert response.status_code == 400
    fields = response.json()["fields"]
    assert isinstance(fields, dict)
    assert fields["non_field_errors"][0]["code"] == "null_characters_not_allowed"
