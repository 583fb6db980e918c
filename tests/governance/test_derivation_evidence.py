"""Evidence and the policy rule for every platform-derived version, and failed ones.

Optimised versions get the same trade as quantised ones (the API, under its
first name ``/quantisation-evidence/`` and its neutral one
``/derivation-evidence/``, and the version page), a quantised version of an
optimised one is compared with its direct parent, and the ``quantisation``
policy rule bounds both. A derivation that ended without a bundle (the real
``not_fused`` outcome of the tiny generated model, derived in the sandbox
here) says why on its page and in the API, takes no uploaded bundle in its
place, and is neither evaluated, scheduled, exported nor put in a use case
(so it can never reach the public register).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import EvaluationRun, EvaluationSchedule, UseCase
from governance.quantisation import quantisation_evidence
from governance.rules.checks import evaluate_rule
from governance.rules.schema import validate_rules
from governance.services.derivations import model_version_derive_execute
from registry.models import ArtifactState, Derivation, ModelVersion
from tests.factories import ModelVersionFactory
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db

OPTIMISED_SETTINGS = {
    "method": "optimised",
    "tool": "engine.attention+engine.packing+onnxruntime.transformers.optimizer",
    "model_type": "bert",
    "fused_ops": {"RotaryEmbedding": 4},
    "max_relative_diff": 2.1e-07,
    "tolerance": 0.0001,
    "verified_sequences": 5,
}


def _derived(parent, derivation: str, settings: dict, version: str) -> ModelVersion:
    """A released platform-derived version of ``parent`` (set up directly)."""
    return ModelVersionFactory(
        model=parent.model,
        version=version,
        base_version=parent,
        derivation=derivation,
        derivation_settings=settings,
        artifact_digest=hashlib.sha256(version.encode()).hexdigest(),
        artifact_state=ArtifactState.AVAILABLE,
        quantisation="fp32" if derivation == Derivation.OPTIMISED else "int8",
        released_at=timezone.now(),
    )


@pytest.fixture
def optimised(fp32_parent, small_suite, make_run):
    """An optimised version of the fp32 parent, each with a run on the small suite."""
    version = _derived(fp32_parent, Derivation.OPTIMISED, OPTIMISED_SETTINGS, "1.1.0")
    make_run(
        fp32_parent, small_suite,
        metrics={"perplexity.perplexity": 40.0, "perplexity.tokens_per_s": 100.0,
                 "mc.acc": 0.8},
    )  # fmt: skip
    make_run(
        version, small_suite,
        metrics={"perplexity.perplexity": 40.0, "perplexity.tokens_per_s": 112.0,
                 "mc.acc": 0.8},
    )  # fmt: skip
    return version


# --- Evidence ----------------------------------------------------------------------


def test_an_optimised_version_has_its_evidence_under_both_names(optimised, member_a):
    api = token_client(member_a)
    old = api.get(f"/api/v1/model-versions/{optimised.pk}/quantisation-evidence/")
    new = api.get(f"/api/v1/model-versions/{optimised.pk}/derivation-evidence/")
    assert old.status_code == new.status_code == 200
    assert old.json() == new.json() == quantisation_evidence(optimised)
    body = new.json()
    assert body["derivation"] == "optimised"
    assert body["parent"] == optimised.base_version_id
    assert body["summary"]["max_perplexity_ratio"] == pytest.approx(1.0)
    assert body["summary"]["min_accuracy_delta"] == pytest.approx(0.0)
    assert body["summary"]["speed_ratio"] == pytest.approx(1.12)


def test_the_neutral_name_hides_another_agencys_private_version(optimised, member_b):
    answer = token_client(member_b).get(
        f"/api/v1/model-versions/{optimised.pk}/derivation-evidence/"
    )
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"


def test_a_quantised_version_of_an_optimised_one_is_compared_with_it(
    optimised, small_suite, make_run, member_a
):
    quantised = _derived(
        optimised, Derivation.QUANTISED, {"method": "dynamic-int8"}, "1.1.1"
    )
    make_run(quantised, small_suite, metrics={"perplexity.perplexity": 40.8})
    body = (
        token_client(member_a)
        .get(f"/api/v1/model-versions/{quantised.pk}/derivation-evidence/")
        .json()
    )
    assert body["parent"] == optimised.pk  # the direct parent, not the fp32 root
    assert body["summary"]["max_perplexity_ratio"] == pytest.approx(1.02)


def test_the_version_page_shows_an_optimised_versions_trade(
    client, optimised, member_a
):
    client.force_login(member_a)
    html = client.get(f"/portal/versions/{optimised.pk}/").content.decode()
    assert 'id="quantisation"' in html
    assert "Optimisation against the base version" in html
    assert "RotaryEmbedding" in html and "2.1e-07" in html
    assert "1.12" in html  # the speed ratio
    assert "small@1.0.0" in html


# --- The policy rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "status"),
    [
        ({"max_perplexity_ratio": 1.0001}, "passed"),
        ({"max_accuracy_drop": 0.0}, "passed"),
        ({"max_perplexity_ratio": 1.0, "max_accuracy_drop": 0.0}, "passed"),
        # Nothing measured the agreement: no evidence is not a pass.
        ({"min_greedy_agreement": 0.99}, "failed"),
    ],
)
def test_the_quantisation_rule_bounds_an_optimised_version(optimised, bounds, status):
    rule = {"id": "lossless", "kind": "quantisation", **bounds}
    validate_rules([rule])
    outcome = evaluate_rule(rule, SimpleNamespace(version=optimised))
    assert outcome.status == status, outcome.message
    assert outcome.evidence["derivation"] == "optimised"
    assert outcome.evidence["suites"] == ["small@1.0.0"]


def test_the_quantisation_rule_fails_an_optimised_version_that_lost_quality(
    optimised, small_suite, make_run
):
    make_run(
        optimised, small_suite, days_ago=0, metrics={"perplexity.perplexity": 41.0}
    )
    rule = {"id": "lossless", "kind": "quantisation", "max_perplexity_ratio": 1.001}
    outcome = evaluate_rule(rule, SimpleNamespace(version=optimised))
    assert outcome.status == "failed"
    assert "1.025" in outcome.message


def test_the_quantisation_rule_fails_an_optimised_version_without_runs(fp32_parent):
    version = _derived(fp32_parent, Derivation.OPTIMISED, OPTIMISED_SETTINGS, "1.2.0")
    rule = {"id": "lossless", "kind": "quantisation", "max_perplexity_ratio": 1.01}
    outcome = evaluate_rule(rule, SimpleNamespace(version=version))
    assert outcome.status == "failed"
    assert "No shared run measures the perplexity ratio." in outcome.message


def test_the_quantisation_rule_does_not_apply_to_a_fine_tuned_version(fp32_parent):
    version = _derived(fp32_parent, Derivation.FINE_TUNED, {}, "2.0.0")
    rule = {"id": "lossless", "kind": "quantisation", "max_perplexity_ratio": 1.01}
    outcome = evaluate_rule(rule, SimpleNamespace(version=version))
    assert outcome.status == "not_applicable"


# --- A derivation that failed ---------------------------------------------------------


@pytest.fixture
def not_fused(fp32_parent, member_a):
    """The tiny generated model optimised for real: the optimiser fuses nothing."""
    response = token_client(member_a).post(
        f"/api/v1/model-versions/{fp32_parent.pk}/derive/",
        {"method": "optimised", "version": "1.0.1"},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert model_version_derive_execute(version_id=response.json()["id"]) == "failed"
    return ModelVersion.objects.get(pk=response.json()["id"])


def test_a_failed_derivation_says_why_in_the_api_and_on_its_page(
    client, not_fused, member_a
):
    body = token_client(member_a).get(f"/api/v1/model-versions/{not_fused.pk}/").json()
    assert body["artifact_state"] == "failed"
    assert body["derivation_settings"]["failure_code"] == "not_fused"
    assert "no fusable pattern" in body["artifact_error"]
    assert not_fused.derivation_failed
    client.force_login(member_a)
    html = client.get(f"/portal/versions/{not_fused.pk}/").content.decode()
    assert 'id="derivation-failure"' in html
    assert "recognised a pattern it can fuse" in html
    assert ">not_fused<" in html
    # Neither a trade to compare, nor a bundle to upload, nor exports.
    assert 'id="quantisation"' not in html
    assert "Upload the bundle" not in html
    assert "Attach a dataset" not in html
    assert "/exports/" not in html


def test_a_failed_derivation_takes_no_uploaded_bundle(
    not_fused, member_a, lm_bundle_zip
):
    api = token_client(member_a)
    upload = SimpleUploadedFile(
        "bundle.zip", lm_bundle_zip.read_bytes(), content_type="application/zip"
    )
    answer = api.post(
        f"/api/v1/model-versions/{not_fused.pk}/artifact/",
        {"file": upload},
        format="multipart",
    )
    assert answer.status_code == 409, answer.content
    assert answer.json()["code"] == "derived_version"
    not_fused.refresh_from_db()
    assert not_fused.artifact_state == ArtifactState.FAILED
    assert not not_fused.artifact_key


def test_a_failed_derivation_is_not_evaluated_scheduled_exported_or_used(
    not_fused, member_a, maintainer_a, small_suite
):
    api = token_client(member_a)
    evaluation = api.post(
        f"/api/v1/model-versions/{not_fused.pk}/evaluations/",
        {"suite": small_suite.name},
        format="json",
    )
    schedule = api.post(
        "/api/v1/evaluation-schedules/",
        {"model_version": not_fused.pk, "suite": small_suite.pk,
         "interval_seconds": 21600},
        format="json",
    )  # fmt: skip
    exports = [
        api.get(f"/api/v1/model-versions/{not_fused.pk}/exports/{kind}/")
        for kind in ("model-card", "ml-bom", "annex-iv")
    ]
    use_case = api.post(
        "/api/v1/use-cases/",
        {"model_version": not_fused.pk, "title": "Answers", "purpose": "Answer.",
         "public_service": "Waste collection",
         "valid_until": (timezone.localdate() + timedelta(days=200)).isoformat()},
        format="json",
    )  # fmt: skip
    bundle = token_client(maintainer_a).post(
        "/api/v1/federation/exports/",
        {"model_version": not_fused.pk, "include_artifacts": False},
        format="json",
    )
    for answer in (evaluation, schedule, *exports, use_case, bundle):
        assert answer.status_code == 409, answer.content
        assert answer.json()["code"] == "derivation_failed"
        assert "never will" in answer.json()["message"]
    assert not EvaluationRun.objects.filter(model_version=not_fused).exists()
    assert not EvaluationSchedule.objects.filter(model_version=not_fused).exists()
    assert not UseCase.objects.filter(model_version=not_fused).exists()
    assert not AuditEvent.objects.filter(
        action="export.created", object_id=str(not_fused.pk)
    ).exists()
