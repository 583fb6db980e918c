"""Optimised versions: ONNX Runtime's transformer fusions as a platform action.

``"method": "optimised"`` goes through the same service, API action, portal
form and worker as the quantisers. The llama family fixture is one whose
attention is fused (``GroupQueryAttention``); the tiny Llama-shaped model of
``modelgen`` is one nothing fuses (``not_fused``: its head size 8 is below
the kernel's multiple of 16, and ONNX Runtime's optimiser matches none of
it). That fused and unfused graphs score alike within 1e-4 on all ten
families is proved in ``tests/engine/test_optimise.py``; here the platform
keeps that proof.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import AuditEvent
from engine.optimise import TOLERANCE, derive_optimised_bundle
from engine.sandbox import EvaluationFailure
from governance.models import EvaluationRun
from governance.services.derivations import model_version_derive_execute
from registry.models import ArtifactState, Derivation, ModelVersion
from tests.conftest import (
    celery_worker,
    database_url,
    process_env,
    queued_tasks,
    wait_until,
)
from tests.engine.test_families import FIXTURES
from tests.factories import AIModelFactory, ModelVersionFactory
from tests.governance.conftest import released_fp32_version
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def llama_zip(tmp_path_factory) -> Path:
    """The llama family fixture as an uploaded bundle (a zip)."""
    root = tmp_path_factory.mktemp("llama")
    return Path(shutil.make_archive(str(root / "llama"), "zip", FIXTURES / "llama"))


@pytest.fixture
def fusable_parent(llama_zip, member_a):
    """A released fp32 llama-family version of agency A."""
    return released_fp32_version(llama_zip, member_a, "tests/llama-parent.zip")


def _derive(api, parent, **body):
    return api.post(f"/api/v1/model-versions/{parent.pk}/derive/", body, format="json")


def _settled(version_id):
    def check():
        version = ModelVersion.objects.get(pk=version_id)
        return version if version.artifact_state != ArtifactState.PENDING else None

    return check


def test_derive_optimised_registers_a_pending_version_with_lineage(
    fusable_parent, member_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = _derive(
            token_client(member_a), fusable_parent, method="optimised", version="1.0.1"
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["derivation"] == "optimised"
    assert body["artifact_state"] == "pending"
    assert body["base_version"]["id"] == fusable_parent.pk
    assert body["derivation_settings"] == {
        "method": "optimised",
        "opt_level": 0,
        "tolerance": TOLERANCE,
        "parent_sha256": fusable_parent.artifact_digest,
        "tool": "engine.attention+engine.packing+onnxruntime.transformers.optimizer",
    }
    derived = ModelVersion.objects.get(pk=body["id"])
    assert derived.derivation == Derivation.OPTIMISED
    assert derived.licence_id == fusable_parent.licence_id
    event = AuditEvent.objects.get(
        action="model_version.derivation_requested", object_id=str(derived.pk)
    )
    assert event.payload_data["settings"]["method"] == "optimised"
    assert len(queued_tasks(callbacks)) == 1


def test_an_optimised_version_is_not_optimised_again(fusable_parent, member_a):
    ModelVersion.objects.filter(pk=fusable_parent.pk).update(
        derivation=Derivation.OPTIMISED,
        base_version=ModelVersionFactory(model=fusable_parent.model),
    )
    before = ModelVersion.objects.count()
    response = _derive(
        token_client(member_a), fusable_parent, method="optimised", version="2.0.0"
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "already_optimised"
    assert ModelVersion.objects.count() == before


@pytest.mark.parametrize("visibility", ["private", "public"])
def test_another_agency_cannot_derive_an_optimised_version(
    fusable_parent, member_b, visibility
):
    fusable_parent.model.visibility = visibility
    fusable_parent.model.save(update_fields=["visibility"])
    response = _derive(
        token_client(member_b), fusable_parent, method="optimised", version="2.0.0"
    )
    assert response.status_code == 404
    assert not ModelVersion.objects.filter(version="2.0.0").exists()


def test_the_schema_offers_the_optimised_method(member_a):
    schema = token_client(member_a).get("/api/schema/", {"format": "json"}).json()
    method = schema["components"]["schemas"]["DeriveRequest"]["properties"]["method"]
    enum = method["allOf"][0]["$ref"].rsplit("/", 1)[1]
    choices = schema["components"]["schemas"][enum]
    assert "optimised" in choices["enum"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_fused_version_is_verified_released_and_evaluated_and_an_unfusable_one_fails(
    fusable_parent, fp32_parent, member_a, small_suite, make_run, mlflow_store
):
    make_run(fusable_parent, small_suite, metrics={"perplexity.perplexity": 40.0})
    make_run(fp32_parent, small_suite, metrics={"perplexity.perplexity": 40.0})
    api = token_client(member_a)
    env = process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
    )
    with celery_worker(env, settings.CELERY_TASK_DEFAULT_QUEUE):
        fused = _derive(api, fusable_parent, method="optimised", version="1.1.0")
        unfused = _derive(api, fp32_parent, method="optimised", version="1.0.1")
        assert fused.status_code == unfused.status_code == 202
        version = wait_until(_settled(fused.json()["id"]), timeout=300)
        refused = wait_until(_settled(unfused.json()["id"]), timeout=300)
        assert version.artifact_state == ArtifactState.AVAILABLE, version.artifact_error
        recorded = version.derivation_settings
        assert recorded["model_type"] == "bert"
        assert recorded["fused_ops"] == {"GroupQueryAttention": 2}
        assert recorded["packing"]["qkv"] == 2  # one packed projection a layer
        assert recorded["max_relative_diff"] <= TOLERANCE
        assert recorded["verified_sequences"] == 5
        assert version.is_released and version.selftest["passed"] is True
        assert version.quantisation == "fp32"
        assert version.artifact_digest != fusable_parent.artifact_digest
        run = EvaluationRun.objects.get(model_version=version)
        assert run.suite_id == small_suite.pk
        assert run.artifact_digest == version.artifact_digest
        assert AuditEvent.objects.filter(
            action="model_version.derived", object_id=str(version.pk)
        ).exists()
    # Not recognised: said so, and no copy of the parent was registered.
    assert refused.artifact_state == ArtifactState.FAILED
    assert refused.derivation_settings["failure_code"] == "not_fused"
    assert "no fusable pattern" in refused.artifact_error
    assert not refused.artifact_key and not refused.artifact_digest
    assert not refused.is_released
    assert not EvaluationRun.objects.filter(model_version=refused).exists()
    failed = AuditEvent.objects.get(
        action="model_version.derivation_failed", object_id=str(refused.pk)
    )
    assert failed.payload_data["code"] == "not_fused"


@pytest.mark.slow
def test_a_fusion_outside_the_tolerance_fails_the_version(fusable_parent, member_a):
    response = _derive(
        token_client(member_a), fusable_parent, method="optimised", version="1.2.0"
    )
    assert response.status_code == 202
    version = ModelVersion.objects.get(pk=response.json()["id"])
    # The llama fusion moves log-likelihoods by ~2e-7: past a 1e-12 tolerance.
    version.derivation_settings = {**version.derivation_settings, "tolerance": 1e-12}
    version.save(update_fields=["derivation_settings"])
    assert model_version_derive_execute(version_id=version.pk) == "failed"
    version.refresh_from_db()
    assert version.derivation_settings["failure_code"] == "fusion_not_verified"
    assert "above the tolerance" in version.artifact_error
    assert not version.artifact_key


def test_the_engine_refuses_a_fusion_past_its_tolerance(llama_zip, tmp_path):
    with pytest.raises(EvaluationFailure) as caught:
        derive_optimised_bundle(
            llama_zip,
            tmp_path / "out.zip",
            memory_bytes=settings.CIVITAS_EVAL_MEMORY_BYTES,
            timeout_s=120,
            tolerance=0.0,
        )
    assert caught.value.code == "refused"
    assert caught.value.reason == "fusion_not_verified"
    assert not (tmp_path / "out.zip").exists()


def test_portal_form_offers_and_registers_the_optimised_method(
    client, fusable_parent, member_a
):
    client.force_login(member_a)
    form = client.get(f"/portal/versions/{fusable_parent.pk}/derive/")
    assert 'value="optimised"' in form.content.decode()
    response = client.post(
        f"/portal/versions/{fusable_parent.pk}/derive/",
        {"method": "optimised", "version": "1.3.0", "block_size": ""},
        follow=True,
    )
    derived = ModelVersion.objects.get(model=fusable_parent.model, version="1.3.0")
    assert derived.derivation == Derivation.OPTIMISED
    assert derived.derivation_settings["tool"] == (
        "engine.attention+engine.packing+onnxruntime.transformers.optimizer"
    )
    assert "fuses and verifies" in response.content.decode()


def test_another_agencys_private_parent_is_hidden_from_the_portal_form(
    client, member_b, member_a
):
    private = ModelVersionFactory(
        model=AIModelFactory(agency=member_a.membership.agency)
    )
    client.force_login(member_b)
    response = client.post(
        f"/portal/versions/{private.pk}/derive/",
        {"method": "optimised", "version": "9.0.0"},
    )
    assert response.status_code == 404
    assert not ModelVersion.objects.filter(version="9.0.0").exists()
