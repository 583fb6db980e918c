"""Real evaluation fixtures: a generated ONNX LM bundle and a small suite in storage."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.utils import timezone

from governance.models import EvaluationSuite
from governance.services import decisions as decision_services
from governance.services import lifecycle
from governance.services import policies as policy_services
from governance.services import use_cases as use_case_services
from registry.models import ArtifactState, ModelKind
from tests.factories import (
    AIModelFactory,
    DatasetVersionFactory,
    LicenceFactory,
    ModelVersionFactory,
)
from tests.registry.conftest import *  # noqa: F403  (people and API clients)


@pytest.fixture(scope="session")
def lm_bundle_zip(tmp_path_factory) -> Path:
    """A tiny Llama-shaped causal LM in the Optimum layout, zipped."""
    import modelgen

    root = tmp_path_factory.mktemp("lm")
    texts = [
        "The library opens at nine and closes at six on weekdays.",
        "Apply for a parking permit online or at the town hall.",
        "Household waste is collected every Tuesday morning.",
        "You can renew your passport at the civil registry office.",
    ] * 8
    tokenizer = modelgen.train_tokenizer(texts, 300)
    cfg = modelgen.LMConfig(
        vocab_size=320,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    bundle = modelgen.write_lm_bundle(
        root / "bundle", cfg, modelgen.init_weights(cfg, 0), tokenizer
    )
    archive = shutil.make_archive(str(root / "tiny-lm"), "zip", bundle)
    return Path(archive)


def _stored(key: str, content: bytes) -> tuple[str, str]:
    key = storages["artifacts"].save(key, ContentFile(content))
    return key, hashlib.sha256(content).hexdigest()


def stored_lm_artifact(key: str, bundle_zip: Path) -> dict:
    """The artifact fields of a causal LM whose zip is stored under ``key``."""
    content = bundle_zip.read_bytes()
    key, digest = _stored(key, content)
    return {
        "artifact_state": ArtifactState.AVAILABLE,
        "artifact_key": key,
        "artifact_digest": digest,
        "artifact_size": len(content),
        "artifact_format": "zip",
        "kind": ModelKind.CAUSAL_LM_KV,
        "layout": "optimum",
    }


@pytest.fixture
def released_lm_version(lm_bundle_zip, member_a):
    """A released version of agency A whose artifact is the generated bundle."""
    return ModelVersionFactory(
        model__agency=member_a.membership.agency,
        **stored_lm_artifact("tests/tiny-lm.zip", lm_bundle_zip),
    )


def released_fp32_version(bundle_zip: Path, member, key: str):
    """A released fp32 language model of ``member``'s agency, its zip in the store."""
    model = AIModelFactory(agency=member.membership.agency, created_by=member)
    return ModelVersionFactory(
        model=model,
        version="1.0.0",
        created_by=member,
        **stored_lm_artifact(key, bundle_zip),
        quantisation="fp32",
        released_at=timezone.now(),
        hosting_jurisdiction="FR",
    )


@pytest.fixture
def fp32_parent(lm_bundle_zip, member_a):
    """A released fp32 language model of agency A (the generated tiny LM)."""
    return released_fp32_version(lm_bundle_zip, member_a, "tests/derive-parent.zip")


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.fixture
def small_suite(db):
    """A built-in suite of two tasks whose data are registry dataset versions."""
    perplexity = _jsonl(
        [{"text": "The library opens at nine."}, {"text": "Waste is collected."}]
    )
    choice = _jsonl(
        [
            {
                "context": "Passports are renewed at the",
                "choices": ["civil registry", "bakery"],
                "answer": 0,
            },
            {
                "context": "Waste is collected every",
                "choices": ["Tuesday", "decade"],
                "answer": 0,
            },
        ]
    )
    tasks = []
    for task, content in (("perplexity", perplexity), ("multiple_choice", choice)):
        key, digest = _stored(f"tests/{task}.jsonl", content)
        version = DatasetVersionFactory(
            storage_key=key, digest=digest, size_bytes=len(content)
        )
        tasks.append(
            {"task": task, "name": task, "dataset_version": version.pk, "options": {}}
        )
    return EvaluationSuite.objects.create(
        name="small",
        version="1.0.0",
        licence=LicenceFactory(expression="CC0-1.0"),
        tasks=tasks,
    )


# --- Use cases, risk and policies ----------------------------------------------


@pytest.fixture
def aia_questionnaire(db):
    """The shipped questionnaires as the data migration loads them.

    Loaded again when a transactional test's flush emptied the table.
    """
    from governance import risk
    from governance.models import Questionnaire

    for definition in risk.shipped_definitions():
        Questionnaire.objects.get_or_create(
            name=definition["name"],
            version=definition["version"],
            defaults={"title": definition["title"], "definition": definition},
        )
    return Questionnaire.objects.get(name="aia", version="1")


@pytest.fixture
def governed_version(member_a):
    """A released causal-LM version of agency A with a synthetic verified digest.

    Trained and hosted in FR, one million parameters, a filled model card:
    the facts the policy rules read, without a real bundle.
    """
    from django.utils import timezone

    return ModelVersionFactory(
        model__agency=member_a.membership.agency,
        model__description="Answers questions about local services.",
        artifact_state=ArtifactState.AVAILABLE,
        artifact_digest="a" * 64,
        artifact_format="zip",
        kind=ModelKind.CAUSAL_LM_KV,
        parameter_count=1_000_000,
        training_jurisdiction="FR",
        hosting_jurisdiction="FR",
        limitations="Short answers only.",
        risks="May state wrong opening hours.",
        released_at=timezone.now(),
    )


@pytest.fixture
def draft_use_case(member_a, governed_version):
    """A draft use case of agency A on ``governed_version``, written by its service."""
    from datetime import timedelta

    from django.utils import timezone

    return use_case_services.use_case_create(
        actor=member_a,
        model_version=governed_version,
        title="Drafting replies to citizens",
        purpose="Draft first replies to letters about waste collection.",
        public_service="Waste collection, City A",
        affected_people="Residents who write to the city",
        decision_informed="None: staff write and sign every reply.",
        human_oversight="A clerk reads and edits every draft.",
        valid_until=timezone.localdate() + timedelta(days=365),
    )


@pytest.fixture
def make_run(db, member_a):
    """Build a finished evaluation run with its metrics directly (test set-up only).

    ``make_run(version, suite, metrics={"task.name": value}, days_ago=1,
    status="succeeded", digest=None, performance=None)``; ``digest`` defaults
    to the version's, ``performance`` is one task's performance record.
    """
    from datetime import timedelta

    from django.utils import timezone

    from governance.models import EvaluationRun, RunMetric, RunStatus

    def build(
        version,
        suite,
        *,
        metrics=None,
        days_ago: float = 1,
        status=RunStatus.SUCCEEDED,
        digest=None,
        performance=None,
    ):
        finished = timezone.now() - timedelta(days=days_ago)
        run = EvaluationRun.objects.create(
            model_version=version,
            suite=suite,
            status=status,
            requested_by=member_a,
            artifact_digest=version.artifact_digest if digest is None else digest,
            started_at=finished - timedelta(minutes=5),
            finished_at=finished,
            results=[
                {
                    "task": "perplexity",
                    "name": "perplexity",
                    "metrics": {},
                    "performance": performance or {},
                }
            ],
        )
        for key, value in (metrics or {}).items():
            task, _, name = key.partition(".")
            RunMetric.objects.create(run=run, task=task, name=name, value=value)
        return run

    return build


# --- Lifecycle and decisions ---------------------------------------------------

# Answers of the shipped questionnaire (aia@1) that land on each tier.
TIER_ANSWERS = {
    "minimal": {
        "prohibited_practices": ["none"],
        "areas": ["general_information"],
        "decision_role": "no_decision",
        "affected_people": "staff_only",
        "scale": "under_1k",
        "impact_on_rights": "none",
        "reversibility": "easily",
        "personal_data_in_use": "none",
        "data_representativeness": "assessed",
        "public_interaction": "no",
        "human_oversight": "every_output",
        "explainability": "yes",
        "contestability": "not_needed",
        "fallback": "yes",
    }
}
TIER_ANSWERS["limited"] = {
    **TIER_ANSWERS["minimal"],
    "public_interaction": "yes_disclosed",
}
TIER_ANSWERS["high"] = {**TIER_ANSWERS["minimal"], "areas": ["migration"]}
TIER_ANSWERS["prohibited"] = {
    **TIER_ANSWERS["minimal"],
    "prohibited_practices": ["social_scoring"],
}
RATIONALE = "The evidence is complete and the oversight described is adequate."
JUSTIFICATION = (
    "The accuracy bound is met on the production sample; the suite's small "
    "public set under-represents local vocabulary, re-measured next quarter."
)


class LifecycleKit:
    """Drives one use case through the lifecycle services, for test set-up.

    The use case is agency A's ``draft_use_case``; a ``baseline`` platform
    policy requires ``multiple_choice.acc`` >= 0.5 on suite ``small``, no
    older than 30 days. Alice (member) requests the evaluations, Mara
    (maintainer) submits, Rita and Rolf (oversight) review.
    """

    def __init__(self, *, use_case, requester, submitter, reviewers, suite, policy):
        self.use_case = use_case
        self.requester = requester
        self.submitter = submitter
        self.reviewers = reviewers
        self.suite = suite
        self.policy = policy

    def refresh(self):
        self.use_case.refresh_from_db()
        return self.use_case

    def assess(self, tier: str = "minimal"):

        return use_case_services.use_case_assess(
            actor=self.requester, use_case=self.use_case, answers=TIER_ANSWERS[tier]
        )

    def run(self, *, acc: float = 0.9, days_ago: float = 1, requested_by=None):
        """A succeeded run of ``small`` on the current digest (rows built directly)."""
        from datetime import timedelta

        from django.utils import timezone

        from governance.models import EvaluationRun, RunMetric, RunStatus

        finished = timezone.now() - timedelta(days=days_ago)
        version = self.use_case.model_version
        run = EvaluationRun.objects.create(
            model_version=version,
            suite=self.suite,
            status=RunStatus.SUCCEEDED,
            requested_by=requested_by or self.requester,
            artifact_digest=version.artifact_digest,
            started_at=finished - timedelta(minutes=3),
            finished_at=finished,
            engine_version="1.0.0",
            environment={
                "engine_version": "1.0.0",
                "onnxruntime": "1.20.0",
                "runtime_settings": {"intra_op_num_threads": 2},
            },
            results=[
                {
                    "task": "multiple_choice",
                    "name": "multiple_choice",
                    "metrics": {"acc": acc},
                    "performance": {"tokens": 100, "wall_s": 0.5},
                }
            ],
        )
        RunMetric.objects.create(run=run, task="multiple_choice", name="acc", value=acc)
        return run

    def submit(self):

        return lifecycle.use_case_submit(actor=self.submitter, use_case=self.use_case)

    def in_review(self, tier: str = "minimal", *, acc: float = 0.9):
        """Assessed, evaluated, submitted and taken into review by Rita."""

        self.assess(tier)
        self.run(acc=acc)
        self.submit()
        lifecycle.use_case_start_review(actor=self.reviewers[0], use_case=self.use_case)
        return self.refresh()

    def approved(self, tier: str = "minimal"):
        """In service: approved by Rita (and Rolf for a high-risk case)."""

        self.in_review(tier)
        for reviewer in self.reviewers[: 2 if tier == "high" else 1]:
            decision_services.use_case_approve(
                actor=reviewer, use_case=self.use_case, rationale=RATIONALE
            )
        return self.refresh()


@pytest.fixture
def second_reviewer(oversight_body):
    from registry.models import Role
    from tests.factories import MembershipFactory, UserFactory

    return MembershipFactory(
        user=UserFactory(username="rolf"), agency=oversight_body, role=Role.REVIEWER
    ).user


@pytest.fixture
def baseline_policy(reviewer, small_suite):
    """A platform policy requiring multiple_choice.acc >= 0.5, at most 30 days old."""

    return policy_services.policy_create(
        actor=reviewer,
        name="baseline",
        title="Baseline quality",
        scope="platform",
        rules=[
            {
                "id": "mc-acc",
                "kind": "required_evaluation",
                "suite": "small",
                "metric": "multiple_choice.acc",
                "min": 0.5,
                "max_age_days": 30,
            }
        ],
    )


@pytest.fixture
def kit(
    draft_use_case,
    aia_questionnaire,
    member_a,
    maintainer_a,
    reviewer,
    second_reviewer,
    small_suite,
    baseline_policy,
):
    return LifecycleKit(
        use_case=draft_use_case,
        requester=member_a,
        submitter=maintainer_a,
        reviewers=[reviewer, second_reviewer],
        suite=small_suite,
        policy=baseline_policy,
    )


@pytest.fixture
def fast_password_hashing(settings):
    """MD5 hashing for test users: PBKDF2 costs most of a second per factory user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def fast_passwords(settings):
    """A cheap password hasher: the lifecycle tests create many people.

    Each factory-made user costs half a second with the production PBKDF2
    work factor; no lifecycle test is about passwords.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
