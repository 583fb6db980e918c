"""The suite pages: who sees and writes what, validation shown, the service's effect."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from governance.models import EvaluationRun, EvaluationSuite, RunStatus
from governance.services import suites as suite_services
from tests.factories import LicenceFactory, ModelVersionFactory
from tests.governance.test_suites import PROBES, QUESTIONS, _data

pytestmark = pytest.mark.django_db

LIST = reverse("governance_portal:suite-list")
NEW = reverse("governance_portal:suite-create")


def _rows(prefix: str, rows: list[dict]) -> dict:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        data.update({f"{prefix}-{index}-{k}": v for k, v in row.items()})
    return data


def _post(answers, probes, **fields) -> dict:
    LicenceFactory(expression="CC0-1.0")
    tasks = fields.pop("tasks", None) or (
        [
            {
                "task": "generation",
                "name": "answers",
                "dataset_version": answers.pk,
                "options": '{"max_new_tokens": 4}',
            },
            {"task": "poisoning", "name": "probe", "dataset_version": probes.pk},
            {},
        ]
    )
    thresholds = fields.pop("thresholds", [{"metric": "answers.f1", "min": "0.5"}, {}])
    return {
        "name": "permit-answers",
        "version": "1.0.0",
        "description": "Questions our front desk answers.",
        "licence": "CC0-1.0",
        "visibility": "agency",
        "metrics": "answers.f1\nanswers.exact_match",
        **_rows("tasks", tasks),
        **_rows("thresholds", thresholds),
        **fields,
    }


@pytest.fixture
def agency_data(member_a):
    agency = member_a.membership.agency
    return _data(agency, QUESTIONS), _data(agency, PROBES)


@pytest.fixture
def own_suite(member_a, agency_data):
    answers, probes = agency_data
    return suite_services.suite_register(
        actor=member_a,
        name="permit-answers",
        version="1.0.0",
        licence=LicenceFactory(expression="CC0-1.0"),
        tasks=[
            {"task": "generation", "name": "answers", "dataset_version": answers},
            {"task": "poisoning", "name": "probe", "dataset_version": probes},
        ],
        metrics=["answers.f1"],
        thresholds={"answers.f1": {"min": 0.5}, "probe.answer_change_rate": {"max": 2}},
    )


def _used(suite, member):
    EvaluationRun.objects.create(
        model_version=ModelVersionFactory(model__agency=member.membership.agency),
        suite=suite,
        status=RunStatus.SUCCEEDED,
        requested_by=member,
        artifact_digest="0" * 64,
    )


def test_anonymous_readers_are_sent_to_sign_in(client, own_suite):
    for url in (
        LIST,
        NEW,
        reverse("governance_portal:suite-detail", args=[own_suite.pk]),
        reverse("governance_portal:suite-edit", args=[own_suite.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_c1_another_agencys_private_suite_is_not_found(client, member_b, own_suite):
    client.force_login(member_b)
    detail = reverse("governance_portal:suite-detail", args=[own_suite.pk])
    assert client.get(detail).status_code == 404
    assert client.get(f"{detail}edit/").status_code == 404
    assert client.post(f"{detail}delete/").status_code == 404
    assert "permit-answers" not in client.get(LIST).content.decode()
    assert EvaluationSuite.objects.filter(pk=own_suite.pk).exists()


def test_the_suite_page_shows_tasks_metrics_and_thresholds_readably(
    client, member_a, own_suite
):
    client.force_login(member_a)
    page = client.get(reverse("governance_portal:suite-detail", args=[own_suite.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "generation" in text and "poisoning" in text
    assert "max_new_tokens" not in text  # no options given: "defaults"
    assert "at least 0.5" in text
    assert "at most 2" in text
    assert "New version" in text and ">Edit<" in text
    main = text.split("<main", 1)[1].split("</main>", 1)[0]
    assert "{&quot;" not in main and '{"' not in main  # never raw JSON


def test_a_member_registers_a_suite_with_its_rows(client, member_a, agency_data):
    client.force_login(member_a)
    response = client.post(NEW, _post(*agency_data))

    suite = EvaluationSuite.objects.get(name="permit-answers")
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "governance_portal:suite-detail", args=[suite.pk]
    )
    assert suite.agency == member_a.membership.agency
    assert [t["task"] for t in suite.tasks] == ["generation", "poisoning"]
    assert suite.tasks[0]["options"] == {"max_new_tokens": 4}
    assert suite.metrics == ["answers.f1", "answers.exact_match"]
    assert suite.thresholds == {"answers.f1": {"min": 0.5}}
    event = AuditEvent.objects.get(action="suite.registered", object_id=str(suite.pk))
    assert event.actor_label.startswith(member_a.username)


def test_the_api_rules_and_the_service_refusals_are_form_errors(
    client, member_a, agency_data
):
    client.force_login(member_a)
    answers, probes = agency_data
    bare = _data(member_a.membership.agency, QUESTIONS, motivation="")
    cases = [
        ({"tasks": [{}, {}]}, "This list may not be empty"),
        ({"licence": "Not-A-Licence-7"}, "Unknown SPDX licence"),
        ({"metrics": "answers.nope"}, "is not &#x27;task.metric&#x27;"),
        ({"thresholds": [{"metric": "answers.f1", "min": "0.9", "max": "0.1"}]},
         "min is greater than max"),
        ({"tasks": [{"task": "generation", "dataset_version": bare.pk}]},
         "has no datasheet"),
        ({"tasks": [{"task": "generation", "dataset_version": answers.pk,
                     "options": "[1"}]}, "Not valid JSON"),
    ]  # fmt: skip
    for change, message in cases:
        response = client.post(NEW, _post(answers, probes, **change))
        assert response.status_code == 200, change
        assert message in response.content.decode(), change
        assert 'role="alert"' in response.content.decode()
    assert not EvaluationSuite.objects.filter(name="permit-answers").exists()


def test_a_reviewer_may_not_register_a_suite(client, reviewer, agency_data):
    client.force_login(reviewer)
    response = client.post(NEW, _post(*agency_data))
    assert response.status_code == 403
    assert "Only members and maintainers" in response.content.decode()
    assert not EvaluationSuite.objects.exists()


def test_an_unused_suite_is_edited_through_the_service(client, member_a, own_suite):
    client.force_login(member_a)
    url = reverse("governance_portal:suite-edit", args=[own_suite.pk])
    response = client.post(
        url,
        {
            "description": "Sharper.",
            "visibility": "agency",
            "metrics": "answers.f1",
            **_rows("thresholds", [{"metric": "answers.f1", "min": "0.7"}]),
        },
    )
    assert response.status_code == 302
    own_suite.refresh_from_db()
    assert own_suite.description == "Sharper."
    assert own_suite.thresholds == {"answers.f1": {"min": 0.7}}
    assert AuditEvent.objects.filter(
        action="suite.updated", object_id=str(own_suite.pk)
    ).exists()


def test_a_used_suite_is_frozen_and_offers_a_new_version(client, member_a, own_suite):
    _used(own_suite, member_a)
    client.force_login(member_a)
    detail = client.get(
        reverse("governance_portal:suite-detail", args=[own_suite.pk])
    ).content.decode()
    assert "can no longer be changed" in detail
    assert "New version" in detail and ">Edit<" not in detail

    response = client.post(
        reverse("governance_portal:suite-edit", args=[own_suite.pk]),
        {
            "description": "x",
            "visibility": "agency",
            "metrics": "",
            **_rows("thresholds", []),
        },
    )
    assert response.status_code == 200
    assert "register a new version instead" in response.content.decode()
    own_suite.refresh_from_db()
    assert own_suite.description == ""


def test_a_new_version_starts_from_the_last_and_links_to_it(
    client, member_a, own_suite
):
    _used(own_suite, member_a)
    client.force_login(member_a)
    url = reverse("governance_portal:suite-version-create", args=[own_suite.pk])
    form = client.get(url)
    assert form.status_code == 200
    assert 'value="answers"' in form.content.decode()  # the tasks are prefilled
    answers, probes = (own_suite.tasks[0], own_suite.tasks[1])
    data = _post(
        None,
        None,
        version="1.1.0",
        tasks=[
            {"task": "generation", "name": "answers",
             "dataset_version": answers["dataset_version"]},
            {"task": "poisoning", "name": "probe",
             "dataset_version": probes["dataset_version"]},
        ],
        thresholds=[{"metric": "answers.f1", "min": "0.8"}],
    )  # fmt: skip
    data.pop("name")
    response = client.post(url, data)
    new = EvaluationSuite.objects.get(name="permit-answers", version="1.1.0")
    assert response.status_code == 302
    assert new.previous == own_suite
    assert new.thresholds == {"answers.f1": {"min": 0.8}}
    page = client.get(reverse("governance_portal:suite-detail", args=[new.pk]))
    assert "1.0.0" in page.content.decode()  # the version history


def test_an_unused_suite_is_deleted_after_a_question(client, member_a, own_suite):
    client.force_login(member_a)
    url = reverse("governance_portal:suite-delete", args=[own_suite.pk])
    question = client.get(url)
    assert question.status_code == 200
    assert "cannot be undone" in question.content.decode()
    assert EvaluationSuite.objects.filter(pk=own_suite.pk).exists()
    response = client.post(url)
    assert response.status_code == 302
    assert not EvaluationSuite.objects.filter(pk=own_suite.pk).exists()
    assert AuditEvent.objects.filter(action="suite.deleted").exists()


def _suites(agency, count):
    licence = LicenceFactory(expression="CC0-1.0")
    for index in range(count):
        EvaluationSuite.objects.create(
            name=f"s{index}",
            version="1.0.0",
            licence=licence,
            agency=agency,
            tasks=[{"task": "generation", "name": "a", "dataset_version": 1}],
            thresholds={"a.f1": {"min": 0.1}},
        )


def test_the_list_and_a_page_take_a_constant_number_of_queries(
    client, member_a, django_assert_max_num_queries
):
    agency = member_a.membership.agency
    client.force_login(member_a)
    _suites(agency, 2)
    with django_assert_max_num_queries(12) as few:
        assert client.get(LIST).status_code == 200
    licence = LicenceFactory(expression="MIT")
    for index in range(18):
        EvaluationSuite.objects.create(
            name=f"t{index}", version="1.0.0", licence=licence, agency=agency,
            tasks=[], visibility="shared",
        )  # fmt: skip
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get(LIST)
    assert page.content.decode().count("@1.0.0</a>") == 20


def test_a_suite_page_with_many_versions_takes_a_constant_number_of_queries(
    client, member_a, own_suite, django_assert_max_num_queries
):
    def add(start, count):
        latest = EvaluationSuite.objects.filter(name=own_suite.name).latest("pk")
        for index in range(start, start + count):
            latest = suite_services.suite_version_create(
                actor=member_a, suite=latest, version=f"2.{index}.0"
            )
        return latest

    client.force_login(member_a)
    newest = add(0, 1)
    url = reverse("governance_portal:suite-detail", args=[newest.pk])
    with django_assert_max_num_queries(12) as few:
        client.get(url)
    newest = add(1, 18)
    url = reverse("governance_portal:suite-detail", args=[newest.pk])
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get(url)
    assert page.content.decode().count(">2.") >= 18
