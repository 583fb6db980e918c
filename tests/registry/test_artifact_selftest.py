"""Registration self-test of every kind of model, and the sweep of lost verifications.

Real PostgreSQL, real bundles from ``modelgen``, the self-test run in the
engine's sandboxed child by ``artifacts.artifact_verify`` (what the worker's
``civitas.artifact_verify`` task calls; ``test_artifact_worker`` proves the
path through a real worker). The upload itself never runs a model.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from registry.models import ArtifactState, ModelVersion
from registry.services import artifacts
from tests.engine.looping_models import (
    looping_tensor_model_bytes,
    write_looping_classifier,
)
from tests.engine.test_runtime import break_present_value
from tests.factories import AIModelFactory, ModelVersionFactory
from tests.registry.artifact_bundles import (  # noqa: F401 - fixtures
    artifact_dirs_fixture,
    files_under,
    fresh_throttles,
    put_raw,
    row,
    tiny_model_bytes,
    zip_bytes,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def version_a(agency_a, member_a):
    model = AIModelFactory(agency=agency_a, created_by=member_a)
    return ModelVersionFactory(model=model, created_by=member_a)


@pytest.fixture(scope="module")
def lm_parts():
    import modelgen

    cfg = modelgen.LMConfig(
        vocab_size=300, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    tokenizer = modelgen.train_tokenizer(
        [t for _, t in modelgen.corpus_documents()], cfg.vocab_size
    )
    return cfg, modelgen.init_weights(cfg, 0), tokenizer


def _zip_folder(folder: Path) -> bytes:
    members = {f"assistant/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}
    return zip_bytes(members, deflate=True)


def _good_lm_zip(tmp_path: Path, lm_parts) -> bytes:
    import modelgen

    cfg, weights, tokenizer = lm_parts
    folder = tmp_path / "good" / "assistant"
    modelgen.write_lm_bundle(folder, cfg, weights, tokenizer)
    return _zip_folder(folder)


def _broken_lm_zip(tmp_path: Path, lm_parts) -> bytes:
    """A KV-cache LM whose ``present.0.value`` output is scaled by 0.5."""
    import modelgen

    cfg, weights, tokenizer = lm_parts
    model = break_present_value(modelgen.build_causal_lm(cfg, weights))
    folder = modelgen.write_bundle(
        tmp_path / "broken" / "assistant", model, tokenizer, cfg.to_hf_config()
    )
    return _zip_folder(Path(folder))


def _url(version, suffix: str = "artifact/") -> str:
    return f"/api/v1/model-versions/{version.pk}/{suffix}"


def _upload_then_verify(client, version, body: bytes, filename: str, callbacks):
    """Upload (202, pending, no model run), then the worker's verification."""
    started = time.monotonic()
    response = put_raw(client, _url(version), body, filename=filename)
    answered = time.monotonic() - started
    assert response.status_code == 202, response.json()
    assert response.json()["artifact_state"] == "pending"
    assert response.json()["released_at"] is None
    with callbacks(execute=True):  # the failed verdict deletes on commit
        state = artifacts.artifact_verify(version_id=version.pk)
    return response, state, answered


def test_upload_of_a_language_model_stores_its_selftest_figures(
    api_a, version_a, artifact_dirs, tmp_path, lm_parts,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    response, state, _ = _upload_then_verify(
        api_a, version_a, _good_lm_zip(tmp_path, lm_parts), "lm.zip",
        django_capture_on_commit_callbacks,
    )  # fmt: skip

    assert state == ArtifactState.AVAILABLE
    assert response.json()["selftest"] == {}
    figures = row(version_a)["selftest"]
    assert figures["passed"] is True
    assert figures["padding_max_abs_diff"] <= 1e-4
    assert figures["kv_max_abs_diff"] <= 1e-4
    assert figures["generation_match"] is True
    assert figures["logits_shape"][0] == 2
    assert row(version_a)["released_at"] is not None
    listed = api_a.get(f"/api/v1/model-versions/{version_a.pk}/")
    assert listed.json()["selftest"] == figures
    [event] = AuditEvent.objects.filter(action="model_version.artifact_verified")
    assert json.loads(event.payload)["selftest_passed"] is True
    assert files_under(artifact_dirs.scratch) == []


def test_upload_of_a_generic_model_is_self_tested_with_one_forward_pass(
    api_a, version_a, artifact_dirs, django_capture_on_commit_callbacks
):
    _, state, _ = _upload_then_verify(
        api_a, version_a, tiny_model_bytes(), "t.onnx",
        django_capture_on_commit_callbacks,
    )  # fmt: skip

    assert state == ArtifactState.AVAILABLE
    assert row(version_a)["selftest"] == {
        "kind": "generic", "passed": True, "output_shapes": [[2]],
    }  # fmt: skip


def test_upload_of_a_classifier_is_self_tested_with_one_forward_pass(
    api_a, version_a, artifact_dirs, tmp_path, lm_parts,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    import numpy as np

    from modelgen.graphs import build_classifier, classifier_config, write_bundle

    _, _, tokenizer = lm_parts
    rng = np.random.default_rng(0)
    vocab = tokenizer.get_vocab_size()
    model = build_classifier(
        rng.normal(size=(vocab, 8)).astype(np.float32),
        rng.normal(size=(8, 3)).astype(np.float32),
        np.zeros(3, dtype=np.float32),
    )
    config = classifier_config(vocab_size=vocab, hidden_size=8, labels="abc")
    folder = Path(write_bundle(tmp_path / "clf" / "c", model, tokenizer, config))

    _, state, _ = _upload_then_verify(
        api_a, version_a, _zip_folder(folder), "clf.zip",
        django_capture_on_commit_callbacks,
    )  # fmt: skip

    assert state == ArtifactState.AVAILABLE
    figures = row(version_a)["selftest"]
    assert figures["passed"] is True
    assert figures["kind"] == "seq_classifier"
    assert figures["probabilities_shape"] == [2, 3]
    assert figures["row_sum_max_abs_diff"] <= 1e-3


def test_language_model_failing_its_selftest_is_refused_and_leaves_nothing(
    api_a, version_a, artifact_dirs, tmp_path, lm_parts,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    _, state, _ = _upload_then_verify(
        api_a, version_a, _broken_lm_zip(tmp_path, lm_parts), "b.zip",
        django_capture_on_commit_callbacks,
    )  # fmt: skip

    assert state == ArtifactState.FAILED
    stored = row(version_a)
    assert "selftest_failed" in stored["artifact_error"]
    assert "kv_max_abs_diff" in stored["artifact_error"]
    assert stored["released_at"] is None
    assert stored["artifact_key"] == ""
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []
    [event] = AuditEvent.objects.filter(
        action="model_version.artifact_verification_failed"
    )
    assert json.loads(event.payload)["code"] == "selftest_failed"
    # A refused upload may be replaced.
    again = put_raw(api_a, _url(version_a), tiny_model_bytes(), filename="t.onnx")
    assert again.status_code == 202, again.json()


@pytest.mark.parametrize("kind", ["seq_classifier", "generic"])
def test_b11_model_whose_graph_never_ends_is_refused_within_the_selftest_limit(
    api_a, version_a, artifact_dirs, tmp_path, lm_parts, settings, kind,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    settings.CIVITAS_SELFTEST_TIMEOUT_SECONDS = 3
    if kind == "seq_classifier":
        folder = write_looping_classifier(tmp_path / "spin" / "c", lm_parts[2])
        body, name = _zip_folder(folder), "spin.zip"
    else:
        body, name = looping_tensor_model_bytes(), "spin.onnx"

    started = time.monotonic()
    response, state, answered = _upload_then_verify(
        api_a, version_a, body, name, django_capture_on_commit_callbacks
    )
    elapsed = time.monotonic() - started

    assert response.json()["kind"] == kind
    assert answered < 2.0, "the upload must not run the model"
    assert state == ArtifactState.FAILED
    assert elapsed < 3 + 10
    stored = row(version_a)
    assert "selftest_failed" in stored["artifact_error"]
    assert "timeout" in stored["artifact_error"]
    assert stored["released_at"] is None
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []


def test_reference_failing_its_selftest_ends_failed_with_the_reason(
    version_a, artifact_dirs, tmp_path, settings, member_a, lm_parts,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    drop = tmp_path / "drop"
    drop.mkdir()
    settings.CIVITAS_REFERENCE_ROOTS = [str(drop)]
    path = drop / "broken.zip"
    path.write_bytes(_broken_lm_zip(tmp_path, lm_parts))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with django_capture_on_commit_callbacks():
        artifacts.model_version_artifact_reference(
            actor=member_a, version=version_a, uri=path.as_uri(), sha256=digest
        )

    assert artifacts.artifact_verify(version_id=version_a.pk) == ArtifactState.FAILED

    stored = row(version_a)
    assert "selftest_failed" in stored["artifact_error"]
    assert "kv_max_abs_diff" in stored["artifact_error"]
    assert stored["released_at"] is None
    assert stored["selftest"] == {}
    assert files_under(artifact_dirs.store) == []
    [event] = AuditEvent.objects.filter(
        action="model_version.artifact_verification_failed"
    )
    assert json.loads(event.payload)["code"] == "selftest_failed"


def _pending(version: ModelVersion, *, minutes_ago: int) -> None:
    ModelVersion.objects.filter(pk=version.pk).update(
        artifact_state=ArtifactState.PENDING,
        source_uri="file:///srv/drop/x.onnx",
        artifact_digest="a" * 64,
        updated_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def test_sweep_requeues_an_old_pending_verification_and_ignores_a_fresh_one(
    agency_a, member_a, settings, django_capture_on_commit_callbacks
):
    settings.CIVITAS_ARTIFACT_REQUEUE_MINUTES = 30
    model = AIModelFactory(agency=agency_a, created_by=member_a)
    old = ModelVersionFactory(model=model, created_by=member_a, version="1.0.0")
    fresh = ModelVersionFactory(model=model, created_by=member_a, version="1.1.0")
    available = ModelVersionFactory(model=model, created_by=member_a, version="1.2.0")
    _pending(old, minutes_ago=31)
    _pending(fresh, minutes_ago=5)
    ModelVersion.objects.filter(pk=available.pk).update(
        artifact_state=ArtifactState.AVAILABLE,
        updated_at=timezone.now() - timedelta(days=1),
    )

    with django_capture_on_commit_callbacks() as callbacks:
        result = artifacts.artifact_sweep()

    assert result == {"requeued": 1}
    assert len(callbacks) == 1
    settings.CIVITAS_ARTIFACT_REQUEUE_MINUTES = 1
    with django_capture_on_commit_callbacks() as callbacks:
        assert artifacts.artifact_sweep() == {"requeued": 2}
    assert len(callbacks) == 2
    assert ModelVersion.objects.get(pk=old.pk).artifact_state == ArtifactState.PENDING


def test_artifact_sweep_is_scheduled_every_ten_minutes(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["artifact-sweep"]

    assert entry["task"] == "civitas.artifact_sweep"
    assert entry["schedule"] == timedelta(minutes=10)
