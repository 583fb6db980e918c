"""Modification assessments: the service, the worker path, the policy rule, the API."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from audit.models import AuditEvent
from governance.models import (
    AssessmentStatus,
    ModificationAssessment,
    PolicyResult,
    UseCaseStatus,
)
from governance.services import modifications
from governance.services import policies as policy_services
from registry.models import ArtifactState, Derivation
from tests.conftest import celery_worker, database_url, process_env, wait_until
from tests.factories import ModelVersionFactory
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db

TEXTS = [
    "The library opens at nine and closes at six on weekdays.",
    "Apply for a parking permit online or at the town hall.",
    "Household waste is collected every Tuesday morning.",
] * 8


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, bytes]:
    """A base LM bundle, the same fine-tuned a little, and it quantised; zipped."""
    import modelgen
    from modelgen.derive import quantise

    root = tmp_path_factory.mktemp("modifications")
    cfg = modelgen.LMConfig(
        vocab_size=320, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    tokenizer = modelgen.train_tokenizer(TEXTS, 300)
    weights = modelgen.init_weights(cfg, 0)
    rng = np.random.default_rng(3)
    tuned = {
        k: (w + 0.02 * rng.standard_normal(w.shape)).astype(w.dtype)
        for k, w in weights.items()
    }
    base = modelgen.write_lm_bundle(root / "base", cfg, weights, tokenizer)
    folders = {
        "base": base,
        "fine_tune": modelgen.write_lm_bundle(root / "ft", cfg, tuned, tokenizer),
        "quantised": quantise(base, root / "int8"),
    }
    return {
        name: Path(shutil.make_archive(str(root / name), "zip", folder)).read_bytes()
        for name, folder in folders.items()
    }


def _store(version, content: bytes) -> None:
    """Give a version a stored, released artifact (test set-up, not a service)."""
    digest = hashlib.sha256(content).hexdigest()
    key = storages["artifacts"].save(
        f"tests/model-versions/{version.pk}/{digest}.zip", ContentFile(content)
    )
    type(version).objects.filter(pk=version.pk).update(
        artifact_state=ArtifactState.AVAILABLE,
        artifact_key=key,
        artifact_digest=digest,
        artifact_size=len(content),
        artifact_format="zip",
    )
    version.refresh_from_db()


@pytest.fixture
def base_version(member_a, zips):
    version = ModelVersionFactory(model__agency=member_a.membership.agency)
    _store(version, zips["base"])
    return version


def _derived(base, content: bytes, derivation: str, **fields):
    version = ModelVersionFactory(
        model=base.model, base_version=base, derivation=derivation, **fields
    )
    _store(version, content)
    return version


def test_a_fine_tuned_version_is_assessed_once_and_audited(base_version, zips):
    tuned = _derived(base_version, zips["fine_tune"], Derivation.FINE_TUNED)
    assessment = modifications.modification_assess(version_id=tuned.pk)
    assert assessment.status == AssessmentStatus.COMPLETED, assessment.error
    assert assessment.primary == "fine_tune"
    assert assessment.classes == ["fine_tune"]
    assert 0 < assessment.max_relative_change < 1
    assert assessment.artifact_digest == tuned.artifact_digest
    assert assessment.base_artifact_digest == base_version.artifact_digest
    again = modifications.modification_assess(version_id=tuned.pk)
    assert again.pk == assessment.pk
    events = AuditEvent.objects.filter(action="model_version.modification_assessed")
    assert events.count() == 1
    event = events.get()
    assert event.object_id == str(tuned.pk)
    assert event.payload_data["primary"] == "fine_tune"
    assert event.payload_data["assessment_id"] == assessment.pk


def test_a_quantised_version_is_classed_quantisation(base_version, zips):
    quantised = _derived(base_version, zips["quantised"], Derivation.QUANTISED)
    assessment = modifications.modification_assess(version_id=quantised.pk)
    assert assessment.primary == "quantisation", assessment.error
    assert assessment.weights["tensors_dequantised"] > 0
    assert assessment.max_relative_change < 0.05


def test_a_version_without_base_or_artifact_is_not_assessed(base_version, zips):
    assert modifications.modification_assess(version_id=base_version.pk) is None
    pending = ModelVersionFactory(model=base_version.model, base_version=base_version)
    assert modifications.modification_assess(version_id=pending.pk) is None
    assert not ModificationAssessment.objects.exists()


def test_a_refused_bundle_is_kept_as_a_failed_assessment(base_version):
    broken = _derived(base_version, b"PK\x05\x06" + b"\0" * 18, Derivation.FINE_TUNED)
    assessment = modifications.modification_assess(version_id=broken.pk)
    assert assessment.status == AssessmentStatus.FAILED
    assert assessment.error_code
    assert assessment.classes == []


def test_metric_deltas_on_shared_suites_are_recorded(
    base_version, zips, small_suite, make_run
):
    tuned = _derived(base_version, zips["fine_tune"], Derivation.FINE_TUNED)
    make_run(base_version, small_suite, metrics={"multiple_choice.acc": 0.8})
    make_run(tuned, small_suite, metrics={"multiple_choice.acc": 0.6})
    assessment = modifications.modification_assess(version_id=tuned.pk)
    [suite] = assessment.evaluation_deltas
    [metric] = suite["metrics"]
    assert (metric["task"], metric["name"]) == ("multiple_choice", "acc")
    assert metric["delta"] == pytest.approx(-0.2)


# --- the policy rule ----------------------------------------------------------


def _modification_policy(reviewer, **bounds):
    return policy_services.policy_create(
        actor=reviewer,
        name="modification",
        title="Substantial modification",
        scope="platform",
        rules=[{"id": "mod", "kind": "substantial_modification", **bounds}],
    )


def _outcome(result: PolicyResult) -> dict:
    return next(o for o in result.outcomes if o["rule_id"] == "mod")


def test_a_substantially_modified_version_goes_back_to_review(
    kit, reviewer, base_version, zips, django_capture_on_commit_callbacks
):
    from workers.tasks import usecase_recheck

    version = kit.use_case.model_version
    type(version).objects.filter(pk=version.pk).update(
        base_version=base_version, derivation=Derivation.FINE_TUNED
    )
    _store(version, zips["fine_tune"])
    use_case = kit.approved()
    assert use_case.status == UseCaseStatus.APPROVED
    _modification_policy(reviewer, max_relative_change=0.001)

    with django_capture_on_commit_callbacks() as callbacks:
        assessment = modifications.modification_assess(version_id=version.pk)
    assert assessment.max_relative_change > 0.001
    result = PolicyResult.objects.filter(use_case=use_case).first()
    outcome = _outcome(result)
    assert outcome["status"] == "failed"
    assert "A new review is required." in outcome["message"]
    assert callbacks  # the recheck is queued on commit
    usecase_recheck(result.pk)  # what the queued task runs
    use_case.refresh_from_db()
    assert use_case.status == UseCaseStatus.IN_REVIEW


def test_policy_bounds_decide_what_is_substantial(
    draft_use_case, reviewer, base_version, zips
):
    version = draft_use_case.model_version
    type(version).objects.filter(pk=version.pk).update(base_version=base_version)
    _store(version, zips["quantised"])
    policy = _modification_policy(reviewer, max_relative_change=0.5)
    missing = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    assert _outcome(missing)["status"] == "failed"  # not compared yet
    modifications.modification_assess(version_id=version.pk)
    within = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    assert _outcome(within)["status"] == "passed"  # quantisation is not, by default
    policy_services.policy_revise(
        actor=reviewer,
        policy=policy,
        rules=[{"id": "mod", "kind": "substantial_modification", "quantisation": True}],
    )
    strict = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    assert _outcome(strict)["status"] == "failed"
    assert "quantisation" in _outcome(strict)["message"]


def test_a_version_without_base_is_not_concerned(draft_use_case, reviewer):
    _modification_policy(reviewer, max_relative_change=0.5)
    result = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    assert _outcome(result)["status"] == "not_applicable"


def test_bad_bounds_are_refused_with_the_path(reviewer):
    from config.exceptions import DomainError

    with pytest.raises(DomainError) as refused:
        _modification_policy(reviewer, max_relative_change=-1)
    assert refused.value.code == "invalid_rules"
    [error] = refused.value.fields["rules"]
    assert error["message"].startswith("rules[0].max_relative_change")


# --- the API ------------------------------------------------------------------


def test_another_agency_gets_404_on_the_modification(
    base_version, zips, member_a, member_b
):
    tuned = _derived(base_version, zips["fine_tune"], Derivation.FINE_TUNED)
    modifications.modification_assess(version_id=tuned.pk)
    url = f"/api/v1/model-versions/{tuned.pk}/modification/"
    mine = token_client(member_a).get(url)
    assert mine.status_code == 200, mine.content
    body = mine.json()
    assert body["primary"] == "fine_tune"
    assert body["base_version"] == base_version.pk
    assert body["weights"]["tensors_compared"] > 0
    theirs = token_client(member_b).get(url)
    assert theirs.status_code == 404
    none = token_client(member_a).get(
        f"/api/v1/model-versions/{base_version.pk}/modification/"
    )
    assert none.status_code == 404
    assert none.json()["code"] == "no_assessment"


def test_the_lineage_shows_the_modification_class(base_version, zips, member_a):
    tuned = _derived(base_version, zips["quantised"], Derivation.QUANTISED)
    modifications.modification_assess(version_id=tuned.pk)
    graph = (
        token_client(member_a).get(f"/api/v1/model-versions/{tuned.pk}/lineage/").json()
    )
    [node] = [n for n in graph["nodes"] if n["type"] == "modification"]
    assert node["modification_class"] == "quantisation"
    assert any(e["relation"] == "assessed_by" for e in graph["edges"])


# --- release queues the comparison, a real worker runs it -----------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_releasing_a_derived_upload_queues_its_comparison_on_a_worker(member_a, zips):
    from registry.services import artifacts

    base = ModelVersionFactory(model__agency=member_a.membership.agency)
    _store(base, zips["base"])
    derived = ModelVersionFactory(
        model=base.model, base_version=base, derivation=Derivation.QUANTISED
    )
    _store(derived, zips["quantised"])
    type(derived).objects.filter(pk=derived.pk).update(
        artifact_state=ArtifactState.PENDING
    )
    env = process_env(DATABASE_URL=database_url())
    with celery_worker(env, settings.CELERY_TASK_DEFAULT_QUEUE):
        assert artifacts.artifact_verify(version_id=derived.pk) == "available"
        assessment = wait_until(
            lambda: ModificationAssessment.objects.filter(
                model_version=derived
            ).first(),
            timeout=180,
            what="the worker to assess the released version",
        )
    assert assessment.primary == "quantisation"


def test_a_metric_drop_beyond_the_bound_is_substantial(
    draft_use_case, reviewer, base_version, zips, small_suite, make_run
):
    version = draft_use_case.model_version
    type(version).objects.filter(pk=version.pk).update(base_version=base_version)
    _store(version, zips["fine_tune"])
    modifications.modification_assess(version_id=version.pk)
    make_run(base_version, small_suite, metrics={"multiple_choice.acc": 0.8})
    make_run(version, small_suite, metrics={"multiple_choice.acc": 0.6})
    policy = _modification_policy(reviewer, max_metric_drop=0.1)
    dropped = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    assert _outcome(dropped)["status"] == "failed"
    assert (
        "multiple_choice.acc on small@1.0.0 dropped by 0.2"
        in (_outcome(dropped)["message"])
    )
    policy_services.policy_revise(
        actor=reviewer,
        policy=policy,
        rules=[
            {
                "id": "mod",
                "kind": "substantial_modification",
                "max_metric_drop": 0.1,
                "metrics": ["perplexity.perplexity"],
            }
        ],
    )
    other = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand"
    )
    assert _outcome(other)["status"] == "passed"  # only the named metric counts
