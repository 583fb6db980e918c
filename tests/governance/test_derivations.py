"""Quantised versions derived by the platform: the API, the worker, the evidence.

The worker tests go through the API and a real Celery worker: the derived
version is pending at once, then derived in the sandbox, self-tested,
stored, released, and evaluated on the parent's suites.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import EvaluationRun
from governance.quantisation import quantisation_evidence
from registry.models import ArtifactState, Derivation, ModelKind, ModelVersion
from tests.conftest import (
    celery_worker,
    database_url,
    process_env,
    queued_tasks,
    wait_until,
)
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    ModelVersionFactory,
)
from tests.governance.conftest import _stored
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db

TEXTS = [
    "The library opens at nine.",
    "Waste is collected every Tuesday.",
    "Passports are renewed at the civil registry.",
    "Parking permits are issued by the town hall.",
    "The swimming pool closes at eight.",
]


@pytest.fixture
def calibration(member_a):
    """A dataset version of agency A whose file holds five texts."""
    content = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()
    key, digest = _stored("tests/calibration.jsonl", content)
    return DatasetVersionFactory(
        dataset=DatasetFactory(agency=member_a.membership.agency),
        storage_key=key,
        digest=digest,
        size_bytes=len(content),
        artifact_state=ArtifactState.AVAILABLE,
    )


def _derive(api, parent, **body):
    return api.post(f"/api/v1/model-versions/{parent.pk}/derive/", body, format="json")


# --- Registration and refusals (no worker) -------------------------------------


def test_derive_registers_a_pending_quantised_version_with_lineage(
    fp32_parent, member_a, django_capture_on_commit_callbacks
):
    api = token_client(member_a)
    with django_capture_on_commit_callbacks() as callbacks:
        response = _derive(api, fp32_parent, method="int4", version="1.0.1")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["artifact_state"] == "pending"
    assert body["derivation"] == "quantised"
    assert body["base_version"]["id"] == fp32_parent.pk
    assert body["derivation_settings"]["method"] == "int4"
    assert body["derivation_settings"]["block_size"] == 32
    assert body["derivation_settings"]["parent_sha256"] == fp32_parent.artifact_digest
    derived = ModelVersion.objects.get(pk=body["id"])
    assert derived.base_version_id == fp32_parent.pk
    assert derived.licence_id == fp32_parent.licence_id
    assert derived.hosting_jurisdiction == "FR"
    assert not derived.is_released
    assert AuditEvent.objects.filter(
        action="model_version.derivation_requested", object_id=str(derived.pk)
    ).exists()
    assert len(queued_tasks(callbacks)) == 1  # the derivation task, on commit


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"quantisation": "int8"}, 400, "already_quantised"),
        ({"derivation": Derivation.QUANTISED}, 400, "already_quantised"),
        ({"quantisation": "fp16"}, 400, "not_fp32"),
        ({"released_at": None}, 409, "artifact_not_available"),
    ],
)
def test_only_released_fp32_versions_are_derived(
    fp32_parent, member_a, changes, status, code
):
    if changes.get("derivation"):
        changes["base_version"] = ModelVersionFactory(
            model=fp32_parent.model, released_at=timezone.now()
        )
    ModelVersion.objects.filter(pk=fp32_parent.pk).update(**changes)
    before = ModelVersion.objects.count()
    response = _derive(
        token_client(member_a), fp32_parent, method="dynamic-int8", version="2.0.0"
    )
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert ModelVersion.objects.count() == before


def test_another_agencys_version_is_not_found_even_when_public(fp32_parent, member_b):
    fp32_parent.model.visibility = "public"
    fp32_parent.model.save(update_fields=["visibility"])
    response = _derive(
        token_client(member_b), fp32_parent, method="dynamic-int8", version="2.0.0"
    )
    assert response.status_code == 404
    assert not ModelVersion.objects.filter(version="2.0.0").exists()


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"method": "static-int8"}, "calibration_dataset_version", "required"),
        ({"method": "int4", "block_size": 48}, "block_size", "invalid_choice"),
        ({"method": "fp8"}, "method", "invalid_choice"),
        ({"method": "dynamic-int8", "version": "one"}, "version", "invalid_version"),
    ],
)
def test_bad_requests_answer_400_with_the_field(
    fp32_parent, member_a, body, field, code
):
    before = ModelVersion.objects.count()
    response = _derive(
        token_client(member_a), fp32_parent, **{"version": "2.0.0", **body}
    )
    assert response.status_code == 400, response.content
    errors = response.json()["fields"][field]
    assert errors[0]["code"] == code
    assert ModelVersion.objects.count() == before


@pytest.mark.parametrize(
    ("owner", "code"), [("agency_b", "does_not_exist"), ("agency_a", "no_file")]
)
def test_calibration_must_be_visible_and_have_a_stored_file(
    fp32_parent, member_a, request, owner, code
):
    dataset = DatasetVersionFactory(
        dataset=DatasetFactory(agency=request.getfixturevalue(owner))
    )
    response = _derive(
        token_client(member_a),
        fp32_parent,
        method="static-int8",
        version="2.0.0",
        calibration_dataset_version=dataset.pk,
    )
    assert response.status_code == 400
    errors = response.json()["fields"]["calibration_dataset_version"]
    assert errors[0]["code"] == code
    assert not ModelVersion.objects.filter(version="2.0.0").exists()


# --- The worker ---------------------------------------------------------------


def _settled(version_id):
    def check():
        version = ModelVersion.objects.get(pk=version_id)
        return version if version.artifact_state != ArtifactState.PENDING else None

    return check


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_each_method_is_derived_released_and_evaluated_by_a_worker(
    fp32_parent, calibration, member_a, small_suite, make_run, mlflow_store
):
    make_run(fp32_parent, small_suite, metrics={"perplexity.perplexity": 40.0})
    api = token_client(member_a)
    env = process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
    )
    requests = {
        "dynamic-int8": ({"version": "1.1.0"}, "int8"),
        "static-int8": (
            {"version": "1.2.0", "calibration_dataset_version": calibration.pk},
            "int8",
        ),
        "int4": ({"version": "1.3.0", "block_size": 16}, "int4"),
    }
    with celery_worker(env, settings.CELERY_TASK_DEFAULT_QUEUE):
        ids = {}
        for method, (body, _) in requests.items():
            response = _derive(api, fp32_parent, method=method, **body)
            assert response.status_code == 202, response.content
            ids[method] = response.json()["id"]
        for method, (_, quantisation) in requests.items():
            version = wait_until(
                _settled(ids[method]), timeout=300, what=f"{method} to settle"
            )
            assert version.artifact_state == ArtifactState.AVAILABLE, (
                version.artifact_error
            )
            assert version.is_released
            assert version.quantisation == quantisation
            assert version.kind == ModelKind.CAUSAL_LM_KV
            assert version.selftest["passed"] is True
            assert version.artifact_digest != fp32_parent.artifact_digest
            assert version.artifact_key.endswith(f"{version.artifact_digest}.zip")
            # Evaluated on the parent's suite, on the derived digest.
            run = EvaluationRun.objects.get(model_version=version)
            assert run.suite_id == small_suite.pk
            assert run.artifact_digest == version.artifact_digest
            assert AuditEvent.objects.filter(
                action="model_version.derived", object_id=str(version.pk)
            ).exists()
    static = ModelVersion.objects.get(pk=ids["static-int8"])
    # The calibration read the named dataset version: one feed per text.
    assert static.derivation_settings["calibration_batches"] == len(TEXTS)
    assert static.derivation_settings["calibration_sha256"] == calibration.digest


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_parent_whose_stored_bytes_changed_fails_the_derivation(
    fp32_parent, member_a
):
    storages["artifacts"].delete(fp32_parent.artifact_key)
    storages["artifacts"].save(fp32_parent.artifact_key, ContentFile(b"tampered"))
    env = process_env(DATABASE_URL=database_url())
    with celery_worker(env, settings.CELERY_TASK_DEFAULT_QUEUE):
        response = _derive(
            token_client(member_a), fp32_parent, method="dynamic-int8", version="1.1.0"
        )
        assert response.status_code == 202
        version = wait_until(_settled(response.json()["id"]), timeout=120)
    assert version.artifact_state == ArtifactState.FAILED
    assert "digest_mismatch" in version.artifact_error
    assert not version.is_released
    assert AuditEvent.objects.filter(
        action="model_version.derivation_failed", object_id=str(version.pk)
    ).exists()


def _released_derivative(parent, method: str, quantisation: str) -> ModelVersion:
    """A released quantised version of ``parent`` (set up directly)."""
    return ModelVersionFactory(
        model=parent.model,
        base_version=parent,
        derivation=Derivation.QUANTISED,
        derivation_settings={"method": method},
        artifact_digest=hashlib.sha256(method.encode()).hexdigest(),
        quantisation=quantisation,
        released_at=timezone.now(),
    )


# --- Evidence -------------------------------------------------------------------


def test_evidence_compares_the_latest_runs_on_shared_suites(
    fp32_parent, member_a, small_suite, make_run
):
    derived = _released_derivative(fp32_parent, "dynamic-int8", "int8")
    make_run(
        fp32_parent, small_suite, days_ago=5,
        metrics={"perplexity.perplexity": 99.0},
    )  # fmt: skip
    make_run(
        fp32_parent,
        small_suite,
        metrics={
            "perplexity.perplexity": 40.0, "perplexity.tokens_per_s": 100.0,
            "perplexity.peak_rss_mb": 200.0, "mc.acc": 0.8,
            "perplexity.energy_j_per_1k_tokens": 10.0,
        },
    )  # fmt: skip
    make_run(
        derived,
        small_suite,
        metrics={
            "perplexity.perplexity": 40.4, "perplexity.tokens_per_s": 300.0,
            "perplexity.peak_rss_mb": 80.0, "mc.acc": 0.75,
            "perplexity.energy_j_per_1k_tokens": 4.0,
        },
    )  # fmt: skip
    response = token_client(member_a).get(
        f"/api/v1/model-versions/{derived.pk}/quantisation-evidence/"
    )
    assert response.status_code == 200
    body = response.json()
    assert body == quantisation_evidence(derived)
    summary = body["summary"]
    assert summary["max_perplexity_ratio"] == pytest.approx(1.01)
    assert summary["min_accuracy_delta"] == pytest.approx(-0.05)
    assert summary["speed_ratio"] == pytest.approx(3.0)
    assert summary["memory_ratio"] == pytest.approx(0.4)
    assert summary["energy_ratio"] == pytest.approx(0.4)
    assert [s["suite"] for s in body["suites"]] == ["small@1.0.0"]


def test_evidence_without_a_base_is_empty_and_private_versions_are_hidden(
    fp32_parent, member_a, member_b, small_suite, make_run
):
    fp32_parent.model.visibility = "public"
    fp32_parent.model.save(update_fields=["visibility"])
    response = token_client(member_b).get(
        f"/api/v1/model-versions/{fp32_parent.pk}/quantisation-evidence/"
    )
    assert response.status_code == 200
    assert response.json()["parent"] is None
    assert response.json()["suites"] == []
    private = ModelVersionFactory(
        model=AIModelFactory(agency=member_a.membership.agency)
    )
    hidden = token_client(member_b).get(
        f"/api/v1/model-versions/{private.pk}/quantisation-evidence/"
    )
    assert hidden.status_code == 404


# --- The policy rule --------------------------------------------------------------


@pytest.fixture
def measured_pair(fp32_parent, small_suite, make_run):
    """A quantised version and its parent, each with a run on the small suite."""
    derived = _released_derivative(fp32_parent, "int4", "int4")
    make_run(
        fp32_parent, small_suite,
        metrics={"perplexity.perplexity": 40.0, "mc.acc": 0.8},
    )  # fmt: skip
    make_run(
        derived, small_suite,
        metrics={"perplexity.perplexity": 42.0, "mc.acc": 0.78},
    )  # fmt: skip
    return fp32_parent, derived


@pytest.mark.parametrize(
    ("bounds", "status"),
    [
        ({"max_perplexity_ratio": 1.06}, "passed"),
        ({"max_perplexity_ratio": 1.04}, "failed"),
        ({"max_accuracy_drop": 0.03}, "passed"),
        ({"max_accuracy_drop": 0.01}, "failed"),
        ({"max_perplexity_ratio": 1.06, "max_accuracy_drop": 0.01}, "failed"),
        # Nothing measured the agreement: no evidence is not a pass.
        ({"min_greedy_agreement": 0.5}, "failed"),
    ],
)
def test_quantisation_rule_bounds_the_quality_loss(measured_pair, bounds, status):
    from types import SimpleNamespace

    from governance.rules.checks import evaluate_rule
    from governance.rules.schema import validate_rules

    rule = {"id": "q", "kind": "quantisation", **bounds}
    validate_rules([rule])
    _, derived = measured_pair
    outcome = evaluate_rule(rule, SimpleNamespace(version=derived))
    assert outcome.status == status, outcome.message
    assert outcome.evidence["max_perplexity_ratio"] == pytest.approx(1.05)
    assert outcome.evidence["min_accuracy_delta"] == pytest.approx(-0.02)


def test_quantisation_rule_does_not_apply_to_other_versions(measured_pair):
    from types import SimpleNamespace

    from governance.rules.checks import evaluate_rule

    parent, _ = measured_pair
    rule = {"id": "q", "kind": "quantisation", "max_perplexity_ratio": 1.01}
    outcome = evaluate_rule(rule, SimpleNamespace(version=parent))
    assert outcome.status == "not_applicable"


@pytest.mark.parametrize(
    "rule",
    [
        {"id": "q", "kind": "quantisation"},
        {"id": "q", "kind": "quantisation", "max_perplexity_ratio": 0.9},
        {"id": "q", "kind": "quantisation", "max_accuracy_drop": 2},
        {"id": "q", "kind": "quantisation", "max_perplexity_ratio": 1.1, "x": 1},
    ],
)
def test_quantisation_rule_schema_refuses_bad_bounds(rule):
    from config.exceptions import DomainError
    from governance.rules.schema import validate_rules

    with pytest.raises(DomainError) as caught:
        validate_rules([rule])
    assert caught.value.code == "invalid_rules"


# --- The portal -------------------------------------------------------------------


def test_version_page_offers_the_derivation_and_the_form_registers_it(
    client, fp32_parent, member_a, calibration
):
    client.force_login(member_a)
    page = client.get(f"/portal/versions/{fp32_parent.pk}/")
    assert page.status_code == 200
    assert f"/portal/versions/{fp32_parent.pk}/derive/" in page.content.decode()
    response = client.post(
        f"/portal/versions/{fp32_parent.pk}/derive/",
        {
            "method": "static-int8",
            "version": "1.5.0",
            "calibration": calibration.pk,
            "block_size": "",
        },
    )
    derived = ModelVersion.objects.get(model=fp32_parent.model, version="1.5.0")
    assert response.status_code == 302
    assert response["Location"] == f"/portal/versions/{derived.pk}/"
    assert derived.artifact_state == ArtifactState.PENDING
    assert derived.derivation_settings["calibration_dataset_version"] == calibration.pk
    # A quantised version offers no further derivation.
    derived_page = client.get(f"/portal/versions/{derived.pk}/").content.decode()
    assert f"/portal/versions/{derived.pk}/derive/" not in derived_page


def test_portal_form_shows_the_services_refusal(client, fp32_parent, member_a):
    ModelVersion.objects.filter(pk=fp32_parent.pk).update(quantisation="int8")
    client.force_login(member_a)
    response = client.post(
        f"/portal/versions/{fp32_parent.pk}/derive/",
        {"method": "dynamic-int8", "version": "1.6.0"},
    )
    assert response.status_code == 200
    assert "already quantised" in response.content.decode()
    assert not ModelVersion.objects.filter(version="1.6.0").exists()


def test_another_agency_cannot_open_the_derive_form(client, fp32_parent, member_b):
    client.force_login(member_b)
    assert client.get(f"/portal/versions/{fp32_parent.pk}/derive/").status_code == 404


def test_version_page_of_a_quantised_version_shows_its_trade(
    client, measured_pair, member_a
):
    _, derived = measured_pair
    client.force_login(member_a)
    html = client.get(f"/portal/versions/{derived.pk}/").content.decode()
    assert 'id="quantisation"' in html
    assert "1.0500" in html  # the perplexity ratio
    assert "small@1.0.0" in html


def test_sweep_requeues_only_derivations_that_cannot_still_run(
    fp32_parent, member_a, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from governance.services.derivations import model_version_derive_sweep

    def pending(version: str, age: timedelta) -> ModelVersion:
        derived = ModelVersionFactory(
            model=fp32_parent.model,
            version=version,
            base_version=fp32_parent,
            derivation=Derivation.QUANTISED,
            derivation_settings={"method": "dynamic-int8"},
            artifact_state=ArtifactState.PENDING,
        )
        ModelVersion.objects.filter(pk=derived.pk).update(
            updated_at=timezone.now() - age
        )
        return derived

    pending("1.7.0", timedelta(hours=3))
    pending("1.8.0", timedelta(minutes=5))  # may still be deriving
    with django_capture_on_commit_callbacks() as callbacks:
        assert model_version_derive_sweep() == {"requeued": 1}
    assert len(queued_tasks(callbacks)) == 1
    # Beat's artifact sweep runs the same pass.
    from workers import tasks

    with django_capture_on_commit_callbacks():
        swept = tasks.artifact_sweep()
    assert swept["derivations_requeued"] == 1
