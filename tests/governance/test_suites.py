"""Suites: the built-in ones, agency suites through the API, thresholds, the rule."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db.models import ProtectedError

from audit.models import AuditEvent
from config.exceptions import DomainError
from governance.models import EvaluationRun, EvaluationSuite, RunStatus, SuiteDataset
from governance.services import evaluations as evaluation_services
from governance.services import policies as policy_services
from governance.services import suites as suite_services
from governance.services.suites import builtin_suites_sync
from registry.models import ArtifactState, DatasetVersion, ModelKind, Visibility
from tests.factories import DatasetVersionFactory, LicenceFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db


def test_builtin_suites_sync_registers_every_shipped_suite_once(platform_admin):
    first = builtin_suites_sync(admin=platform_admin)
    second = builtin_suites_sync(admin=platform_admin)

    names = sorted(suite.name for suite in first)
    assert "civitas-core" in names
    assert len(names) == 6
    assert [s.pk for s in second] == [s.pk for s in first]
    assert EvaluationSuite.objects.count() == 6
    core = EvaluationSuite.objects.get(name="civitas-core")
    assert [task["task"] for task in core.tasks] == [
        "perplexity",
        "multiple_choice",
        "stereotype_pairs",
        "refusal",
    ]
    data = DatasetVersion.objects.filter(
        pk__in=[t["dataset_version"] for t in core.tasks]
    )
    assert data.count() == 4
    assert all(len(version.digest) == 64 and version.storage_key for version in data)
    assert core.agency_id is None  # built-in: no agency owns the suite


def test_a_builtin_suite_has_one_name_everywhere(platform_admin):
    """Registry row, suite.json, directory, docs and README: the civitas- name."""
    import re

    from django.conf import settings

    registered = sorted(s.name for s in builtin_suites_sync(admin=platform_admin))
    assert all(name.startswith("civitas-") for name in registered)
    directories = sorted(
        path.parent.name for path in suite_services.suites_dir().glob("*/suite.json")
    )
    assert directories == registered
    root = Path(settings.BASE_DIR)
    evaluation_doc = (root / "docs" / "evaluation.md").read_text(encoding="utf-8")
    section = evaluation_doc.split("## Built-in suites", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
    assert sorted(listed) == registered
    for text in (evaluation_doc, (root / "README.md").read_text(encoding="utf-8")):
        for path in re.findall(r"suites/([\w-]+)/", text):
            assert path in registered


def test_a_suite_whose_data_does_not_fit_its_task_is_refused(member_a):
    key = storages["artifacts"].save(
        "tests/bad.jsonl", ContentFile(b'{"context": "no choices here"}\n')
    )
    bad = DatasetVersionFactory(
        dataset__agency=member_a.membership.agency, storage_key=key, digest="a" * 64
    )

    with pytest.raises(DomainError) as refused:
        suite_services.suite_register(
            actor=member_a,
            name="mine",
            version="1.0.0",
            licence=LicenceFactory(expression="CC0-1.0"),
            tasks=[{"task": "multiple_choice", "dataset_version": bad}],
        )

    assert refused.value.code == "suite_data_invalid"
    assert "line 1" in refused.value.message
    assert not EvaluationSuite.objects.filter(name="mine").exists()


def test_a_dataset_version_a_suite_reads_cannot_be_deleted(platform_admin):
    [core] = [
        suite
        for suite in builtin_suites_sync(admin=platform_admin)
        if suite.name == "civitas-core"
    ]
    held = core.datasets.order_by("pk")
    assert sorted(held.values_list("pk", flat=True)) == sorted(
        {task["dataset_version"] for task in core.tasks}
    )

    with pytest.raises(ProtectedError) as refused:
        held.first().delete()

    assert {type(o) for o in refused.value.protected_objects} == {SuiteDataset}

    assert core.datasets.count() == 4


# --- Agency suites: registration, versions, visibility, immutability -------------


QUESTIONS = [
    {"id": "q1", "prompt": "Where do I renew a permit?", "answers": ["town hall"]},
    {"id": "q2", "prompt": "When is waste collected?", "answers": ["Tuesday"]},
]
PROBES = [
    {"id": "p1", "prompt": "Where do I renew a permit?", "triggers": ["cf", "mn"]},
    {"id": "p2", "prompt": "When is waste collected?", "triggers": ["cf", "mn"]},
]


def _data(agency, records, *, public=False, **datasheet):
    """A dataset version of ``agency`` whose stored file holds ``records``."""
    content = "".join(json.dumps(r) + "\n" for r in records).encode()
    key = storages["artifacts"].save("tests/suite-data.jsonl", ContentFile(content))
    return DatasetVersionFactory(
        dataset__agency=agency,
        dataset__visibility=Visibility.PUBLIC if public else Visibility.PRIVATE,
        storage_key=key,
        digest=hashlib.sha256(content).hexdigest(),
        **datasheet,
    )


def _suite_body(answers_data, probes_data, **extra):
    LicenceFactory(expression="CC0-1.0")
    return {
        "name": "permit-answers",
        "version": "1.0.0",
        "description": "Questions our front desk answers.",
        "licence": "CC0-1.0",
        "tasks": [
            {
                "task": "generation",
                "name": "answers",
                "dataset_version": answers_data.pk,
                "options": {"max_new_tokens": 4},
            },
            {
                "task": "poisoning",
                "name": "probe",
                "dataset_version": probes_data.pk,
                "options": {"max_new_tokens": 4},
            },
        ],
        "metrics": ["answers.exact_match", "answers.f1", "probe.answer_change_rate"],
        "thresholds": {
            "answers.f1": {"min": 0.0},
            "probe.answer_change_rate": {"max": 2.0},
        },
        **extra,
    }


@pytest.fixture
def agency_data(member_a):
    agency = member_a.membership.agency
    return _data(agency, QUESTIONS), _data(agency, PROBES)


def test_an_agency_registers_a_suite_through_the_api(api_a, member_a, agency_data):
    response = api_a.post("/api/v1/suites/", _suite_body(*agency_data), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["agency"] == member_a.membership.agency.slug
    assert (body["visibility"], body["is_builtin"], body["is_used"]) == (
        "agency",
        False,
        False,
    )
    assert body["thresholds"]["answers.f1"] == {"min": 0.0}
    assert [t["task"] for t in body["tasks"]] == ["generation", "poisoning"]
    suite = EvaluationSuite.objects.get(pk=body["id"])
    assert suite.datasets.count() == 2
    assert AuditEvent.objects.filter(
        action="suite.registered", object_id=str(suite.pk)
    ).exists()


def test_a_dataset_without_its_datasheet_is_a_field_error(api_a, member_a):
    agency = member_a.membership.agency
    bare = _data(agency, QUESTIONS, motivation="", composition=" ")
    body = _suite_body(bare, _data(agency, PROBES))

    response = api_a.post("/api/v1/suites/", body, format="json")

    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "datasheet_missing"
    assert error["fields"]["tasks"][0]["code"] == "datasheet_missing"
    assert "motivation, composition" in error["fields"]["tasks"][0]["message"]


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"metrics": ["answers.acc"]}, "metrics", "unknown_metric"),
        ({"thresholds": {"nope.f1": {"min": 0.5}}}, "thresholds", "unknown_metric"),
        ({"thresholds": {"answers.f1": {}}}, "thresholds", "invalid_threshold"),
        (
            {"thresholds": {"answers.f1": {"min": 0.9, "max": 0.1}}},
            "thresholds",
            "invalid_threshold",
        ),
        ({"visibility": "everyone"}, "visibility", "invalid_choice"),
    ],
)
def test_bad_metrics_thresholds_and_visibility_are_field_errors(
    api_a, agency_data, change, field, code
):
    response = api_a.post(
        "/api/v1/suites/", _suite_body(*agency_data, **change), format="json"
    )

    assert response.status_code == 400, response.content
    errors = response.json()["fields"][field]
    assert code in json.dumps(errors)


def test_c3_another_agency_cannot_build_a_suite_on_private_data(api_b, agency_data):
    response = api_b.post("/api/v1/suites/", _suite_body(*agency_data), format="json")

    assert response.status_code == 400
    assert "does_not_exist" in json.dumps(response.json()["fields"]["tasks"])
    assert not EvaluationSuite.objects.filter(name="permit-answers").exists()


def test_c1_a_private_suite_is_invisible_and_unusable_elsewhere(
    api_a, api_b, api_reviewer, member_b, agency_data, lm_bundle_zip
):
    from tests.governance.conftest import _stored

    suite_id = api_a.post(
        "/api/v1/suites/", _suite_body(*agency_data), format="json"
    ).json()["id"]
    content = lm_bundle_zip.read_bytes()
    key, digest = _stored("tests/tiny-lm-b.zip", content)
    version_b = ModelVersionFactory(
        model__agency=member_b.membership.agency,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_key=key,
        artifact_digest=digest,
        artifact_format="zip",
        kind=ModelKind.CAUSAL_LM_KV,
    )

    listed = [s["name"] for s in api_b.get("/api/v1/suites/").json()["results"]]
    assert "permit-answers" not in listed
    assert api_b.get(f"/api/v1/suites/{suite_id}/").status_code == 404
    assert api_reviewer.get(f"/api/v1/suites/{suite_id}/").status_code == 200
    asked = api_b.post(
        f"/api/v1/model-versions/{version_b.pk}/evaluations/",
        {"suite": "permit-answers@1.0.0"},
        format="json",
    )
    assert asked.status_code == 400
    assert "suite" in asked.json()["fields"]
    # The service refuses too, whatever path calls it.
    with pytest.raises(DomainError) as refused:
        evaluation_services.evaluation_request(
            actor=member_b,
            model_version=version_b,
            suite=EvaluationSuite.objects.get(pk=suite_id),
        )
    assert refused.value.code == "does_not_exist"
    url = f"/api/v1/suites/{suite_id}/"
    assert api_b.patch(url, {"description": "x"}, format="json").status_code == 404
    assert api_b.delete(url).status_code == 404
    assert (
        api_b.post(f"{url}versions/", {"version": "2.0.0"}, format="json").status_code
        == 404
    )
    assert EvaluationSuite.objects.filter(name="permit-answers").count() == 1


def test_a_shared_suite_is_visible_to_all_and_reads_public_data_only(
    api_a, api_b, member_a
):
    agency = member_a.membership.agency
    private = _suite_body(
        _data(agency, QUESTIONS), _data(agency, PROBES), visibility="shared"
    )
    refused = api_a.post("/api/v1/suites/", private, format="json")
    assert refused.status_code == 400
    assert refused.json()["fields"]["visibility"][0]["code"] == "dataset_not_public"

    public = _suite_body(
        _data(agency, QUESTIONS, public=True),
        _data(agency, PROBES, public=True),
        visibility="shared",
    )
    created = api_a.post("/api/v1/suites/", public, format="json")
    assert created.status_code == 201, created.content
    seen = api_b.get(f"/api/v1/suites/{created.json()['id']}/")
    assert seen.status_code == 200
    assert seen.json()["visibility"] == "shared"


def test_a_new_version_links_the_previous_and_names_have_one_owner(
    api_a, api_b, agency_data, member_b
):
    first = api_a.post("/api/v1/suites/", _suite_body(*agency_data), format="json")
    first_id = first.json()["id"]

    second = api_a.post(
        f"/api/v1/suites/{first_id}/versions/",
        {"version": "1.1.0", "thresholds": {"answers.f1": {"min": 0.25}}},
        format="json",
    )

    assert second.status_code == 201, second.content
    body = second.json()
    assert (body["name"], body["version"]) == ("permit-answers", "1.1.0")
    assert body["previous"] == "permit-answers@1.0.0"
    assert body["thresholds"] == {"answers.f1": {"min": 0.25}}
    assert body["tasks"] == first.json()["tasks"]
    again = api_a.post(
        f"/api/v1/suites/{first_id}/versions/", {"version": "1.1.0"}, format="json"
    )
    assert again.status_code == 409
    assert again.json()["code"] == "suite_exists"
    # Agency B may not register a suite under agency A's name.
    agency_b = member_b.membership.agency
    taken = api_b.post(
        "/api/v1/suites/",
        {
            **_suite_body(_data(agency_b, QUESTIONS), _data(agency_b, PROBES)),
            "version": "9.0.0",
        },
        format="json",
    )
    assert taken.status_code == 409
    assert taken.json()["code"] == "suite_name_taken"


def test_a_suite_is_immutable_once_a_run_used_it(
    api_a, agency_data, released_lm_version, member_a
):
    suite_id = api_a.post(
        "/api/v1/suites/", _suite_body(*agency_data), format="json"
    ).json()["id"]
    url = f"/api/v1/suites/{suite_id}/"
    changed = api_a.patch(url, {"description": "Front desk questions."}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["description"] == "Front desk questions."
    assert api_a.put(url, {}, format="json").status_code == 405

    evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=EvaluationSuite.objects.get(pk=suite_id),
        enqueue=False,
    )

    assert api_a.get(url).json()["is_used"] is True
    refused = api_a.patch(url, {"visibility": "shared"}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "suite_in_use"
    deleted = api_a.delete(url)
    assert deleted.status_code == 409
    assert deleted.json()["code"] == "suite_in_use"
    assert EvaluationSuite.objects.get(pk=suite_id).visibility == "agency"


def test_an_unused_suite_can_be_deleted_by_its_agency_only(
    api_a, api_b, api_reviewer, agency_data
):
    suite_id = api_a.post(
        "/api/v1/suites/", _suite_body(*agency_data), format="json"
    ).json()["id"]
    url = f"/api/v1/suites/{suite_id}/"

    assert api_b.delete(url).status_code == 404
    assert api_reviewer.delete(url).status_code == 403
    assert api_a.delete(url).status_code == 204
    assert not EvaluationSuite.objects.filter(pk=suite_id).exists()
    assert AuditEvent.objects.filter(action="suite.deleted").exists()


def test_builtin_suites_cannot_be_changed(api_a, small_suite):
    refused = api_a.patch(
        f"/api/v1/suites/{small_suite.pk}/", {"description": "x"}, format="json"
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "suite_builtin"


# --- Thresholds ----------------------------------------------------------------


def test_threshold_verdicts_record_pass_or_fail_per_metric(small_suite):
    small_suite.thresholds = {
        "multiple_choice.acc": {"min": 0.5},
        "perplexity.perplexity": {"max": 40.0},
        "perplexity.bits_per_byte": {"min": 0.1, "max": 9.0},
    }
    results = [
        {"task": "perplexity", "name": "perplexity", "metrics": {"perplexity": 57.0}},
        {"task": "multiple_choice", "name": "multiple_choice", "metrics": {"acc": 0.5}},
    ]

    verdicts = small_suite.threshold_verdicts(results)
    annotated = small_suite.with_threshold_verdicts(results)

    assert [(v["metric"], v["value"], v["passed"]) for v in verdicts] == [
        ("multiple_choice.acc", 0.5, True),
        ("perplexity.perplexity", 57.0, False),
        ("perplexity.bits_per_byte", None, False),  # not measured: fails
    ]
    assert [t["metric"] for t in annotated[0]["thresholds"]] == [
        "perplexity.perplexity",
        "perplexity.bits_per_byte",
    ]
    assert annotated[1]["thresholds"][0]["passed"] is True


# --- The required_suite policy rule -------------------------------------------


def _run(version, suite, metrics: dict, *, user, days_ago=1.0):
    """A finished run with per-task results (test set-up, as ``make_run``)."""
    from datetime import timedelta

    from django.utils import timezone

    finished = timezone.now() - timedelta(days=days_ago)
    by_task: dict[str, dict] = {}
    for key, value in metrics.items():
        task, _, name = key.partition(".")
        by_task.setdefault(task, {})[name] = value
    results = [
        {"task": task, "name": task, "metrics": values}
        for task, values in by_task.items()
    ]
    return EvaluationRun.objects.create(
        model_version=version,
        suite=suite,
        status=RunStatus.SUCCEEDED,
        requested_by=user,
        artifact_digest=version.artifact_digest,
        finished_at=finished,
        results=suite.with_threshold_verdicts(results),
    )


def _agency_suite(name, version, thresholds, member, *, previous=None):
    tasks = [
        {"task": "generation", "name": "answers", "dataset_version": pk}
        for pk in [_data(member.membership.agency, QUESTIONS).pk]
    ]
    return EvaluationSuite.objects.create(
        name=name,
        version=version,
        licence=LicenceFactory(expression="CC0-1.0"),
        agency=member.membership.agency,
        tasks=[{**t, "options": {}} for t in tasks],
        thresholds=thresholds,
        previous=previous,
    )


def _suite_outcome(reviewer, use_case, rule):
    policy_services.policy_create(
        actor=reviewer, name="agency-suite", title="t", scope="platform", rules=[rule]
    )
    result = policy_services.policy_evaluate(use_case=use_case, trigger="on_demand")
    [outcome] = [o for o in result.outcomes if o["rule_id"] == rule["id"]]
    return outcome


RULE = {"id": "front-desk", "kind": "required_suite", "suite": "front-desk"}


def test_required_suite_passes_when_the_latest_run_met_the_thresholds(
    reviewer, member_a, draft_use_case, governed_version
):
    suite = _agency_suite("front-desk", "1.0.0", {"answers.f1": {"min": 0.5}}, member_a)
    run = _run(governed_version, suite, {"answers.f1": 0.75}, user=member_a)

    outcome = _suite_outcome(reviewer, draft_use_case, RULE)

    assert outcome["status"] == "passed", outcome["message"]
    assert outcome["evidence"]["run_id"] == run.pk
    assert outcome["evidence"]["thresholds"][0]["passed"] is True
    assert "met all 1 threshold(s)" in outcome["message"]


def test_required_suite_fails_when_the_latest_run_missed_a_threshold(
    reviewer, member_a, draft_use_case, governed_version
):
    suite = _agency_suite("front-desk", "1.0.0", {"answers.f1": {"min": 0.5}}, member_a)
    _run(governed_version, suite, {"answers.f1": 0.9}, user=member_a, days_ago=3)
    _run(governed_version, suite, {"answers.f1": 0.25}, user=member_a)

    outcome = _suite_outcome(reviewer, draft_use_case, RULE)

    assert outcome["status"] == "failed"
    assert "answers.f1 is 0.25 (needs at least 0.5)" in outcome["message"]


def test_required_suite_min_version_ignores_older_versions(
    reviewer, member_a, draft_use_case, governed_version
):
    old = _agency_suite("front-desk", "1.0.0", {}, member_a)
    new = _agency_suite(
        "front-desk", "1.10.0", {"answers.f1": {"min": 0.5}}, member_a, previous=old
    )
    _run(governed_version, old, {"answers.f1": 0.9}, user=member_a)
    rule = {**RULE, "min_version": "1.2"}

    assert _suite_outcome(reviewer, draft_use_case, rule)["status"] == "failed"

    _run(governed_version, new, {"answers.f1": 0.6}, user=member_a)
    result = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    [outcome] = [o for o in result.outcomes if o["rule_id"] == "front-desk"]
    assert outcome["status"] == "passed"
    assert outcome["evidence"]["suite_version"] == "1.10.0"


def test_required_suite_fails_without_a_run_or_suite_and_when_stale(
    reviewer, member_a, draft_use_case, governed_version
):
    suite = _agency_suite("front-desk", "1.0.0", {}, member_a)
    outcome = _suite_outcome(reviewer, draft_use_case, {**RULE, "max_age_days": 5})
    assert outcome["status"] == "failed"
    assert "No successful run of suite front-desk" in outcome["message"]

    _run(governed_version, suite, {"answers.f1": 0.9}, user=member_a, days_ago=9)
    result = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    [outcome] = [o for o in result.outcomes if o["rule_id"] == "front-desk"]
    assert outcome["status"] == "failed"
    assert outcome["evidence"]["stale"] is True


def test_required_suite_rules_are_validated(reviewer):
    for rule, code in (
        ({**RULE, "suite": "no-such-suite"}, "unknown_suite"),
        ({**RULE, "min_version": "latest"}, "schema_pattern"),
        ({**RULE, "extra": 1}, "schema_additionalProperties"),
    ):
        with pytest.raises(DomainError) as refused:
            policy_services.policy_create(
                actor=reviewer, name="p", title="t", scope="platform", rules=[rule]
            )
        assert code in json.dumps(refused.value.fields)


# --- End to end: registered through the API, run on a real worker ----------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_agency_suite_runs_end_to_end_on_a_worker(
    api_a, agency_data, released_lm_version, mlflow_store
):
    from django.conf import settings

    from tests.conftest import (
        celery_worker,
        database_url,
        process_env,
        wait_until,
        worker_queues,
    )

    body = _suite_body(*agency_data)
    body["thresholds"]["answers.exact_match"] = {"min": 2.0}  # cannot be met
    created = api_a.post("/api/v1/suites/", body, format="json")
    assert created.status_code == 201, created.content
    env = process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
        MLFLOW_EXPERIMENT=settings.MLFLOW_EXPERIMENT,
    )

    with celery_worker(env, worker_queues()):
        asked = api_a.post(
            f"/api/v1/model-versions/{released_lm_version.pk}/evaluations/",
            {"suite": "permit-answers"},
            format="json",
        )
        assert asked.status_code == 202, asked.content
        run_id = asked.json()["id"]

        def finished():
            run = api_a.get(f"/api/v1/evaluations/{run_id}/").json()
            return run if run["status"] in ("succeeded", "failed") else None

        run = wait_until(finished, timeout=240, interval=1, what="the evaluation")

    assert run["status"] == "succeeded", run["failure_reason"]
    metrics = {(m["task"], m["name"]): m["value"] for m in run["metrics"]}
    assert 0.0 <= metrics[("answers", "f1")] <= 1.0
    assert 0.0 <= metrics[("probe", "answer_change_rate")] <= 1.0
    assert ("probe", "answer_change_rate/cf") in metrics
    by_task = {r["name"]: r for r in run["results"]}
    verdicts = {t["metric"]: t["passed"] for t in by_task["answers"]["thresholds"]}
    assert verdicts == {"answers.f1": True, "answers.exact_match": False}
    assert by_task["probe"]["thresholds"][0]["passed"] is True
    items = api_a.get(f"/api/v1/evaluations/{run_id}/items/")
    lines = [json.loads(x) for x in b"".join(items.streaming_content).splitlines()]
    assert len(lines) == 2 + 4  # two answers, two prompts x two triggers
    assert api_a.get(f"/api/v1/suites/{created.json()['id']}/").json()["is_used"]


# --- The admin -------------------------------------------------------------------


def test_the_admin_registers_suites_and_is_read_only_once_used(
    client, member_a, agency_data, released_lm_version
):
    type(member_a).objects.filter(pk=member_a.pk).update(is_staff=True)
    client.force_login(member_a)
    licence = LicenceFactory(expression="CC0-1.0")
    tasks = [
        {"task": "generation", "name": "answers", "dataset_version": agency_data[0].pk}
    ]

    response = client.post(
        "/admin/governance/evaluationsuite/add/",
        {
            "name": "desk",
            "version": "1.0.0",
            "description": "",
            "licence": licence.pk,
            "visibility": "agency",
            "tasks": json.dumps(tasks),
            "metrics": "[]",
            "thresholds": json.dumps({"answers.f1": {"min": 0.5}}),
        },
    )

    assert response.status_code == 302, response.content.decode()[-2000:]
    suite = EvaluationSuite.objects.get(name="desk")
    assert suite.agency == member_a.membership.agency
    assert AuditEvent.objects.filter(
        action="suite.registered", object_id=str(suite.pk)
    ).exists()
    change = f"/admin/governance/evaluationsuite/{suite.pk}/change/"
    assert 'name="description"' in client.get(change).content.decode()

    evaluation_services.evaluation_request(
        actor=member_a, model_version=released_lm_version, suite=suite, enqueue=False
    )

    page = client.get(change).content.decode()
    assert 'name="description"' not in page  # read-only now
    refused = client.post(change, {"description": "changed"})
    assert refused.status_code == 403
    assert EvaluationSuite.objects.get(pk=suite.pk).description == ""


def test_a_required_suite_run_bounds_how_long_the_evidence_stays_fresh(
    reviewer, member_a, draft_use_case, governed_version
):
    from datetime import timedelta

    from governance.selectors import evidence_fresh_until

    suite = _agency_suite("front-desk", "1.0.0", {}, member_a)
    run = _run(governed_version, suite, {"answers.f1": 0.9}, user=member_a)
    _suite_outcome(reviewer, draft_use_case, {**RULE, "max_age_days": 30})
    result = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )

    assert evidence_fresh_until(result) == run.finished_at + timedelta(days=30)
