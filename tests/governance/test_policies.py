"""The policy engine: every rule kind, the rules' schema, versions and verdicts."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditEvent
from config.exceptions import Conflict, DomainError, PolicyViolation
from governance.models import (
    EvaluationRun,
    Policy,
    PolicyResult,
    Questionnaire,
    RunStatus,
    UseCase,
    UseCaseStatus,
)
from governance.rules import checks as rule_checks
from governance.rules import schema as rule_schema
from governance.services import evaluations as evaluation_services
from governance.services import policies as policy_services
from governance.services import use_cases as use_case_services
from registry import services as registry_services
from registry.models import (
    DatasetRole,
    ModelKind,
    ModelVersion,
    ModelVersionDataset,
    PersonalData,
)
from tests.factories import DatasetVersionFactory, ModelVersionFactory

pytestmark = pytest.mark.usefixtures("fast_password_hashing")

# --- helpers -----------------------------------------------------------------------


def _policy(actor, rules, *, name="baseline", scope="platform", **extra) -> Policy:
    return policy_services.policy_create(
        actor=actor,
        name=name,
        title=f"{name} policy",
        scope=scope,
        rules=rules,
        **extra,
    )


def _check(use_case, trigger="on_demand") -> PolicyResult:
    return policy_services.policy_evaluate(use_case=use_case, trigger=trigger)


def _outcome(use_case, rule_id: str) -> dict:
    [outcome] = [o for o in _check(use_case).outcomes if o["rule_id"] == rule_id]
    return outcome


def _licence(expression: str):
    licence, _ = registry_services.licence_register(actor=None, expression=expression)
    return licence


def _set(version: ModelVersion, **fields) -> None:
    # Set-up only: the registry services own these writes in the product.
    ModelVersion.objects.filter(pk=version.pk).update(**fields)


def _link(version, role=DatasetRole.TRAINING, **dataset_fields):
    dataset = DatasetVersionFactory(**dataset_fields)
    ModelVersionDataset.objects.create(
        model_version=version, dataset_version=dataset, role=role
    )
    return dataset


def _base(version, **fields) -> ModelVersion:
    base = ModelVersionFactory(released_at=timezone.now(), **fields)
    _set(version, base_version=base, derivation="fine-tuned")
    return base


ACC = {"id": "mc-acc", "kind": "required_evaluation", "suite": "small"}
PD = {"id": "pd", "kind": "personal_data", "mode": "forbidden"}


# --- required_evaluation -------------------------------------------------------------


def test_required_evaluation_passes_on_the_latest_run_of_the_exact_digest(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    _policy(reviewer, [{**ACC, "metric": "multiple_choice.acc", "min": 0.7}])
    run = make_run(governed_version, small_suite, metrics={"multiple_choice.acc": 0.8})

    outcome = _outcome(draft_use_case, "mc-acc")

    assert outcome["status"] == "passed"
    assert outcome["kind"] == "required_evaluation"
    assert outcome["evidence"]["run_id"] == run.pk
    assert outcome["evidence"]["value"] == 0.8
    assert outcome["evidence"]["artifact_digest"] == "a" * 64
    assert outcome["message"].startswith(
        f"multiple_choice.acc is 0.8 in run {run.pk} (small@1.0.0, finished "
    )
    assert outcome["message"].endswith("at least 0.7 as required.")


def test_required_evaluation_fails_below_the_minimum(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    _policy(reviewer, [{**ACC, "metric": "multiple_choice.acc", "min": 0.7}])
    run = make_run(governed_version, small_suite, metrics={"multiple_choice.acc": 0.55})

    outcome = _outcome(draft_use_case, "mc-acc")

    assert outcome["status"] == "failed"
    assert outcome["evidence"]["value"] == 0.55
    assert f"is 0.55 in run {run.pk}" in outcome["message"]
    assert outcome["message"].endswith("below the minimum 0.7.")


def test_required_evaluation_fails_above_the_maximum(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    rule = {**ACC, "id": "ppl", "metric": "perplexity.perplexity", "max": 40}
    _policy(reviewer, [rule])
    make_run(governed_version, small_suite, metrics={"perplexity.perplexity": 57.25})

    outcome = _outcome(draft_use_case, "ppl")

    assert outcome["status"] == "failed"
    assert "perplexity.perplexity is 57.25" in outcome["message"]
    assert outcome["message"].endswith("above the maximum 40.")


def test_an_older_passing_run_does_not_count_once_a_newer_one_fails(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    _policy(reviewer, [{**ACC, "metric": "multiple_choice.acc", "min": 0.7}])
    make_run(
        governed_version, small_suite, metrics={"multiple_choice.acc": 0.9}, days_ago=5
    )
    newer = make_run(
        governed_version, small_suite, metrics={"multiple_choice.acc": 0.6}, days_ago=1
    )

    outcome = _outcome(draft_use_case, "mc-acc")

    assert outcome["status"] == "failed"
    assert outcome["evidence"]["run_id"] == newer.pk


def test_a_newer_failed_or_running_run_is_ignored(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    _policy(reviewer, [{**ACC, "metric": "multiple_choice.acc", "min": 0.7}])
    good = make_run(
        governed_version, small_suite, metrics={"multiple_choice.acc": 0.9}, days_ago=3
    )
    make_run(governed_version, small_suite, status=RunStatus.FAILED, days_ago=1)
    make_run(governed_version, small_suite, status=RunStatus.RUNNING, days_ago=0)

    outcome = _outcome(draft_use_case, "mc-acc")

    assert outcome["status"] == "passed"
    assert outcome["evidence"]["run_id"] == good.pk


def test_a_run_on_another_digest_does_not_count(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    _policy(reviewer, [{**ACC, "metric": "multiple_choice.acc", "min": 0.7}])
    make_run(
        governed_version,
        small_suite,
        metrics={"multiple_choice.acc": 0.99},
        digest="b" * 64,
    )

    outcome = _outcome(draft_use_case, "mc-acc")

    assert outcome["status"] == "failed"
    assert outcome["evidence"]["run_id"] is None
    assert outcome["message"] == (
        "No successful run of suite small on artifact sha256:aaaaaaaaaaaa exists; "
        "an evaluation of this exact artifact is needed."
    )


def test_a_stale_run_beyond_max_age_fails_as_stale(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    rule = {**ACC, "metric": "multiple_choice.acc", "min": 0.7, "max_age_days": 30}
    _policy(reviewer, [rule])
    run = make_run(
        governed_version,
        small_suite,
        metrics={"multiple_choice.acc": 0.95},
        days_ago=40,
    )

    outcome = _outcome(draft_use_case, "mc-acc")

    assert outcome["status"] == "failed"
    assert outcome["evidence"]["stale"] is True
    assert outcome["evidence"]["run_id"] == run.pk
    assert 39.9 < outcome["evidence"]["age_days"] < 40.1
    assert "is stale" in outcome["message"]
    assert "40.0 days old, beyond the limit of 30 days" in outcome["message"]


def test_a_fresh_run_within_max_age_passes(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    rule = {**ACC, "metric": "multiple_choice.acc", "min": 0.7, "max_age_days": 30}
    _policy(reviewer, [rule])
    make_run(
        governed_version,
        small_suite,
        metrics={"multiple_choice.acc": 0.95},
        days_ago=29,
    )

    assert _outcome(draft_use_case, "mc-acc")["status"] == "passed"


def test_a_run_without_the_metric_fails(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    _policy(reviewer, [{**ACC, "metric": "multiple_choice.f1", "min": 0.5}])
    run = make_run(governed_version, small_suite, metrics={"multiple_choice.acc": 0.9})

    outcome = _outcome(draft_use_case, "mc-acc")

    assert outcome["status"] == "failed"
    assert f"run {run.pk}" in outcome["message"]
    assert outcome["message"].endswith("recorded no metric multiple_choice.f1.")


def test_required_evaluation_without_a_verified_artifact_fails(
    reviewer, draft_use_case, governed_version, small_suite
):
    _policy(reviewer, [{**ACC, "metric": "multiple_choice.acc", "min": 0.7}])
    _set(governed_version, artifact_digest="")

    outcome = _outcome(draft_use_case, "mc-acc")

    assert outcome["status"] == "failed"
    assert "has no verified artifact yet" in outcome["message"]


def test_required_evaluation_is_not_applicable_to_a_model_the_suite_cannot_run(
    reviewer, draft_use_case, governed_version, small_suite
):
    _policy(reviewer, [{**ACC, "metric": "multiple_choice.acc", "min": 0.7}])
    _set(governed_version, kind=ModelKind.SEQ_CLASSIFIER)

    outcome = _outcome(draft_use_case, "mc-acc")

    assert outcome["status"] == "not_applicable"
    assert outcome["evidence"]["model_kind"] == "seq_classifier"
    assert "needs a causal language model" in outcome["message"]


def test_a_suite_version_pin_only_counts_runs_of_that_version(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    rule = {**ACC, "suite": "small@2.0.0", "metric": "multiple_choice.acc", "min": 0}
    small_suite.pk = None
    small_suite.version = "2.0.0"
    small_suite.save()  # set-up: a second version of the suite
    _policy(reviewer, [rule])
    make_run(governed_version, small_suite.__class__.objects.get(version="1.0.0"),
             metrics={"multiple_choice.acc": 0.9})  # fmt: skip

    assert _outcome(draft_use_case, "mc-acc")["status"] == "failed"


# --- the hook after an evaluation -----------------------------------------------------


def test_a_finished_evaluation_rechecks_every_live_use_case_of_its_version(
    reviewer, member_a, draft_use_case, governed_version, small_suite, mlflow_store
):
    _policy(reviewer, [{**ACC, "metric": "multiple_choice.acc", "min": 0.7}])
    retired = use_case_services.use_case_create(
        actor=member_a,
        model_version=governed_version,
        title="Old use",
        purpose="A retired use.",
        public_service="Archive",
        valid_until=draft_use_case.valid_until,
    )
    UseCase.objects.filter(pk=retired.pk).update(status=UseCaseStatus.RETIRED)
    run = EvaluationRun.objects.create(
        model_version=governed_version,
        suite=small_suite,
        status=RunStatus.RUNNING,
        requested_by=member_a,
        artifact_digest=governed_version.artifact_digest,
    )
    engine_result = {
        "results": [
            {
                "task": "multiple_choice",
                "name": "multiple_choice",
                "metrics": {"acc": 0.75},
                "performance": {},
                "items": [],
            }
        ],
        "engine_version": "1.0.0",
    }

    evaluation_services._record_success(run, engine_result, [], wall_s=1.0)

    result = PolicyResult.objects.get(use_case=draft_use_case)
    assert result.trigger == "evaluation"
    assert result.requested_by is None
    assert result.passed is True
    assert result.outcomes[0]["evidence"]["run_id"] == run.pk
    assert not PolicyResult.objects.filter(use_case=retired).exists()
    event = AuditEvent.objects.filter(action="policy.evaluated").last()
    assert event.actor_label == "system"
    assert event.payload_data["trigger"] == "evaluation"


# --- licence --------------------------------------------------------------------------


def test_licence_allow_list_passes_and_fails(
    reviewer, draft_use_case, governed_version
):
    _policy(
        reviewer, [{"id": "open", "kind": "licence", "allow": ["Apache-2.0", "MIT"]}]
    )

    passed = _outcome(draft_use_case, "open")
    _set(governed_version, licence=_licence("CC-BY-NC-4.0"))
    failed = _outcome(draft_use_case, "open")

    assert passed["status"] == "passed"
    assert passed["evidence"]["licences"] == {
        f"Model version {governed_version}": "Apache-2.0"
    }
    assert failed["status"] == "failed"
    assert failed["message"] == (
        f"Model version {governed_version} is licensed CC-BY-NC-4.0, which cannot be "
        "used under the allowed licences (Apache-2.0, MIT) alone."
    )


def test_licence_choice_under_or_is_honoured_and_and_is_not(
    reviewer, draft_use_case, governed_version
):
    _policy(reviewer, [{"id": "no-gpl", "kind": "licence", "deny": ["GPL-3.0-only"]}])

    _set(governed_version, licence=_licence("Apache-2.0 OR GPL-3.0-only"))
    either = _outcome(draft_use_case, "no-gpl")
    _set(governed_version, licence=_licence("Apache-2.0 AND GPL-3.0-only"))
    both = _outcome(draft_use_case, "no-gpl")

    assert either["status"] == "passed"
    assert both["status"] == "failed"
    assert "cannot be used without a denied licence (GPL-3.0-only)" in both["message"]


def test_licence_deny_list_reaches_training_data_when_asked(
    reviewer, draft_use_case, governed_version
):
    rule = {
        "id": "no-nc",
        "kind": "licence",
        "deny": ["CC-BY-NC-4.0"],
        "applies_to": ["model", "training_data"],
    }
    _policy(reviewer, [rule])
    dataset = _link(governed_version, licence=_licence("CC-BY-NC-4.0"))

    outcome = _outcome(draft_use_case, "no-nc")

    assert outcome["status"] == "failed"
    assert f"Training data {dataset} is licensed CC-BY-NC-4.0" in outcome["message"]


def test_lineage_compatibility_fails_on_an_incompatible_base_and_dataset(
    reviewer, draft_use_case, governed_version
):
    _policy(
        reviewer,
        [{"id": "lineage", "kind": "licence", "require_lineage_compatibility": True}],
    )
    base = _base(governed_version, licence=_licence("CC-BY-NC-4.0"))
    dataset = _link(governed_version, licence=_licence("CC-BY-SA-4.0"))

    outcome = _outcome(draft_use_case, "lineage")

    assert outcome["status"] == "failed"
    assert len(outcome["evidence"]["lineage_warnings"]) == 2
    assert f"Base version {base} is licensed CC-BY-NC-4.0" in outcome["message"]
    assert f"The training data {dataset} is licensed CC-BY-SA-4.0" in outcome["message"]


def test_lineage_compatibility_passes_on_compatible_inputs(
    reviewer, draft_use_case, governed_version
):
    _policy(
        reviewer,
        [{"id": "lineage", "kind": "licence", "require_lineage_compatibility": True}],
    )
    _base(governed_version, licence=_licence("MIT"))
    _link(governed_version, licence=_licence("CC-BY-4.0"))

    outcome = _outcome(draft_use_case, "lineage")

    assert outcome["status"] == "passed"
    assert outcome["message"] == (
        "Licences pass: licences compatible along the lineage (1 base version(s), "
        "1 training dataset(s))."
    )


def test_lineage_compatibility_is_not_applicable_without_a_lineage(
    reviewer, draft_use_case
):
    _policy(
        reviewer,
        [{"id": "lineage", "kind": "licence", "require_lineage_compatibility": True}],
    )

    outcome = _outcome(draft_use_case, "lineage")

    assert outcome["status"] == "not_applicable"
    assert "nothing to check" in outcome["message"]


def test_licence_alternatives_read_spdx_expressions():
    assert rule_checks.licence_alternatives("MIT") == [frozenset({"MIT"})]
    assert rule_checks.licence_alternatives("MIT OR (Apache-2.0 AND BSD-3-Clause)") == [
        frozenset({"MIT"}),
        frozenset({"Apache-2.0", "BSD-3-Clause"}),
    ]
    assert rule_checks.licence_alternatives(
        "GPL-2.0-only WITH Classpath-exception-2.0"
    ) == [frozenset({"GPL-2.0-only"})]


# --- sovereignty ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "allowed", "expected"),
    [
        ("FR", ["FR"], True),
        ("FR-IDF", ["FR"], True),
        ("FR", ["FR-IDF"], False),
        ("ES-CT", ["ES-CT"], True),
        ("ES-CT", ["ES-PV"], False),
        ("DE-BY", ["EU"], True),
        ("NO", ["EU"], False),
        ("NO", ["EEA"], True),
        ("US", ["EU", "EEA", "CH"], False),
        ("EU", ["EU"], True),
    ],
)
def test_jurisdiction_matching(code, allowed, expected):
    assert rule_checks.jurisdiction_allowed(code, allowed) is expected


def test_sovereignty_passes_within_the_allowed_jurisdictions(
    reviewer, draft_use_case, governed_version
):
    rule = {
        "id": "sovereign",
        "kind": "sovereignty",
        "training_jurisdictions": ["EU"],
        "hosting_jurisdictions": ["FR"],
        "data_origin_jurisdictions": ["FR", "DE"],
    }
    _policy(reviewer, [rule])
    _set(governed_version, hosting_jurisdiction="FR-IDF")
    _link(governed_version, origin_jurisdiction="DE")

    outcome = _outcome(draft_use_case, "sovereign")

    assert outcome["status"] == "passed"
    assert outcome["evidence"]["hosting_jurisdiction"] == "FR-IDF"
    assert outcome["evidence"]["data_origins"][0]["origin"] == "DE"
    assert outcome["message"] == (
        "Within the allowed jurisdictions: training in FR, hosting in FR-IDF, "
        "data from 1 dataset(s)."
    )


def test_sovereignty_fails_naming_each_place_outside_the_list(
    reviewer, draft_use_case, governed_version
):
    rule = {
        "id": "sovereign",
        "kind": "sovereignty",
        "hosting_jurisdictions": ["FR"],
        "data_origin_jurisdictions": ["EU"],
        "base_model_jurisdictions": ["EU"],
    }
    _policy(reviewer, [rule])
    _set(governed_version, hosting_jurisdiction="US")
    base = _base(governed_version, training_jurisdiction="CN")
    # The base's own training data counts as the version's data too.
    dataset = _link(base, origin_jurisdiction="US")

    outcome = _outcome(draft_use_case, "sovereign")

    assert outcome["status"] == "failed"
    assert outcome["evidence"]["violations"] == [
        f"{governed_version} is hosted in US, outside the allowed FR.",
        f"Training data {dataset} comes from US, outside the allowed EU.",
        f"Base version {base} was trained in CN, outside the allowed EU.",
    ]
    assert outcome["message"] == " ".join(outcome["evidence"]["violations"])


def test_sovereignty_fails_when_a_place_or_the_data_is_not_recorded(
    reviewer, draft_use_case, governed_version
):
    rule = {
        "id": "sovereign",
        "kind": "sovereignty",
        "training_jurisdictions": ["FR"],
        "data_origin_jurisdictions": ["FR"],
    }
    _policy(reviewer, [rule])
    _set(governed_version, training_jurisdiction="")

    outcome = _outcome(draft_use_case, "sovereign")

    assert outcome["status"] == "failed"
    assert (
        f"Where {governed_version} was trained is not recorded." in outcome["message"]
    )
    assert "so where its data came from cannot be shown" in outcome["message"]


def test_sovereignty_of_base_models_is_not_applicable_without_a_base(
    reviewer, draft_use_case
):
    rule = {"id": "base", "kind": "sovereignty", "base_model_jurisdictions": ["EU"]}
    _policy(reviewer, [rule])

    outcome = _outcome(draft_use_case, "base")

    assert outcome["status"] == "not_applicable"
    assert "has no base version" in outcome["message"]


# --- personal_data --------------------------------------------------------------------


def test_personal_data_forbidden_passes_on_data_without_any(
    reviewer, draft_use_case, governed_version
):
    _policy(reviewer, [PD])
    _link(governed_version)
    _link(governed_version, role=DatasetRole.FINE_TUNING)

    outcome = _outcome(draft_use_case, "pd")

    assert outcome["status"] == "passed"
    assert len(outcome["evidence"]["datasets"]) == 2
    assert (
        outcome["message"] == "None of the 2 training dataset(s) holds personal data."
    )


def test_personal_data_forbidden_fails_on_pseudonymised_data(
    reviewer, draft_use_case, governed_version
):
    _policy(reviewer, [PD])
    dataset = _link(
        governed_version,
        personal_data=PersonalData.PSEUDONYMISED,
        legal_basis="GDPR Art. 6(1)(e)",
    )

    outcome = _outcome(draft_use_case, "pd")

    assert outcome["status"] == "failed"
    assert outcome["evidence"]["datasets"][0]["personal_data"] == "pseudonymised"
    assert outcome["message"] == (
        f"Training data {dataset} holds personal data (pseudonymised); the policy "
        "forbids personal data."
    )


def test_personal_data_with_legal_basis_passes_and_without_fails(
    reviewer, draft_use_case, governed_version
):
    _policy(
        reviewer,
        [{"id": "pd", "kind": "personal_data", "mode": "legal_basis_required"}],
    )
    _link(
        governed_version,
        personal_data=PersonalData.PERSONAL,
        legal_basis="GDPR Art. 6(1)(e): a task in the public interest",
    )
    passed = _outcome(draft_use_case, "pd")
    missing = _link(governed_version, personal_data=PersonalData.PSEUDONYMISED)
    failed = _outcome(draft_use_case, "pd")

    assert passed["status"] == "passed"
    assert passed["evidence"]["datasets"][0]["has_legal_basis"] is True
    assert failed["status"] == "failed"
    assert failed["message"] == (
        f"Training data {missing} holds personal data (pseudonymised) but records "
        "no legal basis."
    )


def test_legal_basis_is_not_applicable_without_personal_data(
    reviewer, draft_use_case, governed_version
):
    _policy(
        reviewer,
        [{"id": "pd", "kind": "personal_data", "mode": "legal_basis_required"}],
    )
    _link(governed_version)

    outcome = _outcome(draft_use_case, "pd")

    assert outcome["status"] == "not_applicable"
    assert "no legal basis is needed" in outcome["message"]


def test_personal_data_fails_when_no_training_data_is_recorded(
    reviewer, draft_use_case, governed_version
):
    _policy(reviewer, [PD])
    _link(governed_version, role=DatasetRole.EVALUATION)  # not learned from

    outcome = _outcome(draft_use_case, "pd")

    assert outcome["status"] == "failed"
    assert "No training or fine-tuning data is recorded" in outcome["message"]


# --- documentation --------------------------------------------------------------------


def test_documentation_passes_when_every_field_is_filled(
    reviewer, draft_use_case, governed_version
):
    rule = {
        "id": "docs",
        "kind": "documentation",
        "model_card": ["description", "intended_use", "limitations", "risks"],
        "datasheet": ["motivation", "composition"],
        "use_case": ["human_oversight", "affected_people"],
    }
    _policy(reviewer, [rule])
    _link(governed_version, role=DatasetRole.EVALUATION)

    outcome = _outcome(draft_use_case, "docs")

    assert outcome["status"] == "passed"
    assert outcome["evidence"]["missing"] == []
    assert outcome["message"] == (
        "Filled in: 4 model-card field(s), 2 datasheet field(s) on 1 dataset(s), "
        "2 use-case field(s)."
    )


def test_documentation_fails_naming_every_empty_field(
    reviewer, member_a, draft_use_case, governed_version
):
    rule = {
        "id": "docs",
        "kind": "documentation",
        "model_card": ["limitations", "ethical_considerations", "out_of_scope_uses"],
        "datasheet": ["maintenance"],
        "use_case": ["human_oversight"],
    }
    _policy(reviewer, [rule])
    dataset = _link(governed_version)
    use_case_services.use_case_update(
        actor=member_a, use_case=draft_use_case, human_oversight="  "
    )

    outcome = _outcome(draft_use_case, "docs")

    assert outcome["status"] == "failed"
    assert {"object": "use case", "field": "human_oversight"} in outcome["evidence"][
        "missing"
    ]
    assert outcome["message"] == (
        "Empty: model card: ethical_considerations, out_of_scope_uses; "
        f"datasheet of {dataset}: maintenance; use case: human_oversight."
    )


def test_a_datasheet_rule_is_not_applicable_without_linked_datasets(
    reviewer, draft_use_case
):
    _policy(
        reviewer, [{"id": "ds", "kind": "documentation", "datasheet": ["motivation"]}]
    )

    outcome = _outcome(draft_use_case, "ds")

    assert outcome["status"] == "not_applicable"
    assert "no datasheet is required" in outcome["message"]


# --- size_cost ------------------------------------------------------------------------

ENERGY = {"energy_j": 5.0, "tokens": 1000, "energy_method": "estimate_cpu_time"}


def test_size_and_energy_within_bounds_pass(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    rule = {
        "id": "cost",
        "kind": "size_cost",
        "max_parameters": 2_000_000,
        "max_energy_j_per_1k_tokens": 10,
    }
    _policy(reviewer, [rule])
    run = make_run(governed_version, small_suite, performance=ENERGY)

    outcome = _outcome(draft_use_case, "cost")

    assert outcome["status"] == "passed"
    assert outcome["evidence"]["parameter_count"] == 1_000_000
    assert outcome["evidence"]["run_id"] == run.pk
    assert outcome["evidence"]["energy_j_per_1k_tokens"] == 5.0
    assert outcome["evidence"]["energy_methods"] == ["estimate_cpu_time"]
    assert outcome["message"] == (
        "Within bounds: 1,000,000 parameters (at most 2,000,000); 5 J per 1,000 "
        f"tokens in run {run.pk} (estimate_cpu_time; at most 10)."
    )


def test_size_and_energy_above_bounds_fail(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    rule = {
        "id": "cost",
        "kind": "size_cost",
        "max_parameters": 500_000,
        "max_energy_j_per_1k_tokens": 2.5,
    }
    _policy(reviewer, [rule])
    run = make_run(governed_version, small_suite, performance=ENERGY)

    outcome = _outcome(draft_use_case, "cost")

    assert outcome["status"] == "failed"
    assert outcome["message"] == (
        f"{governed_version} has 1,000,000 parameters, above the maximum 500,000. "
        f"Run {run.pk} used 5 J per 1,000 tokens (estimate_cpu_time), above the "
        "maximum 2.5."
    )


def test_unknown_size_or_energy_fails(
    reviewer, draft_use_case, governed_version, small_suite, make_run
):
    rule = {
        "id": "cost",
        "kind": "size_cost",
        "max_parameters": 500_000,
        "max_energy_j_per_1k_tokens": 2.5,
    }
    _policy(reviewer, [rule])
    _set(governed_version, parameter_count=None)

    no_run = _outcome(draft_use_case, "cost")
    run = make_run(governed_version, small_suite, performance={"energy_j": 1.0})
    no_tokens = _outcome(draft_use_case, "cost")

    assert no_run["status"] == "failed"
    assert "parameter count" in no_run["message"]
    assert "No successful run of any suite" in no_run["message"]
    assert f"Run {run.pk} counted no tokens" in no_tokens["message"]


def test_energy_is_total_energy_over_total_tokens():
    run = EvaluationRun(
        results=[
            {"performance": {"energy_j": 2.0, "tokens": 1000, "energy_method": "rapl"}},
            {
                "performance": {
                    "energy_j": 10.0,
                    "tokens": 3000,
                    "energy_method": "rapl",
                }
            },
            {"performance": {"energy_j": 7.0, "tokens": 0}},
        ]
    )

    assert rule_checks.run_energy_per_1k_tokens(run) == (3.0, ["rapl"])


# --- the engine -----------------------------------------------------------------------


def test_the_engine_applies_platform_agency_and_tier_policies_only(
    reviewer, member_a, agency_a, agency_b, draft_use_case, aia_questionnaire
):
    rule = [PD]
    _policy(reviewer, rule, name="everyone")
    _policy(reviewer, rule, name="city-a", scope="agency", agency=agency_a)
    _policy(reviewer, rule, name="region-b", scope="agency", agency=agency_b)
    _policy(reviewer, rule, name="high-only", scope="risk_tier", risk_tier="high")
    _policy(reviewer, rule, name="limited-only", scope="risk_tier", risk_tier="limited")
    _policy(reviewer, rule, name="dormant", is_active=False)

    before = _check(draft_use_case)
    use_case_services.use_case_assess(
        actor=member_a,
        use_case=draft_use_case,
        answers={
            **{
                q["id"]: (
                    [q["answers"][0]["id"]]
                    if q.get("multiple")
                    else q["answers"][0]["id"]
                )
                for q in aia_questionnaire.definition["questions"]
            },
            "areas": ["justice"],
        },
    )
    after = _check(draft_use_case)

    assert [p["name"] for p in before.policies] == ["city-a", "everyone"]
    assert before.risk_tier == ""
    assert [p["name"] for p in after.policies] == ["city-a", "everyone", "high-only"]
    assert after.risk_tier == "high"


def test_only_the_latest_version_of_a_policy_is_in_force(
    reviewer, draft_use_case, governed_version
):
    first = _policy(reviewer, [PD])
    second = policy_services.policy_revise(
        actor=reviewer,
        policy=first,
        rules=[{"id": "size", "kind": "size_cost", "max_parameters": 10}],
    )

    result = _check(draft_use_case)

    assert [(o["policy_version"], o["rule_id"]) for o in result.outcomes] == [
        (2, "size")
    ]
    assert result.policies[0]["id"] == second.pk
    retired = policy_services.policy_revise(
        actor=reviewer, policy=second, is_active=False
    )
    assert retired.version == 3
    assert _check(draft_use_case).policies == []


def test_a_result_is_stored_with_its_snapshot_and_audited(
    reviewer, member_a, draft_use_case, governed_version
):
    _policy(
        reviewer,
        [
            {"id": "size", "kind": "size_cost", "max_parameters": 10},
            {"id": "pd", "kind": "personal_data", "mode": "forbidden"},
            {"id": "base", "kind": "sovereignty", "base_model_jurisdictions": ["FR"]},
        ],
    )

    result = policy_services.policy_evaluate(
        use_case=draft_use_case, trigger="on_demand", actor=member_a
    )

    assert result.passed is False
    assert result.model_version_id == governed_version.pk
    assert result.artifact_digest == "a" * 64
    assert result.trigger == "on_demand"
    assert result.requested_by == member_a
    assert [o["status"] for o in result.outcomes] == [
        "failed",
        "failed",
        "not_applicable",
    ]
    assert set(result.outcomes[0]) == {
        "policy",
        "policy_id",
        "policy_version",
        "rule_id",
        "kind",
        "status",
        "evidence",
        "message",
    }
    assert result.failed_rules() == [("baseline", "size"), ("baseline", "pd")]
    event = AuditEvent.objects.filter(action="policy.evaluated").last()
    assert event.object_id == str(result.pk)
    assert event.agency_slug == "city-a"
    assert event.payload_data["failed"] == ["baseline/size", "baseline/pd"]
    assert event.payload_data["policies"] == ["baseline@1"]


def test_with_no_policy_in_force_the_result_passes_and_lists_none(draft_use_case):
    result = _check(draft_use_case, trigger="submission")

    assert (result.passed, result.policies, result.outcomes) == (True, [], [])
    assert result.trigger == "submission"


def test_not_applicable_rules_do_not_fail_the_result(reviewer, draft_use_case):
    _policy(
        reviewer,
        [{"id": "base", "kind": "sovereignty", "base_model_jurisdictions": ["FR"]}],
    )

    assert _check(draft_use_case).passed is True


def test_an_unknown_trigger_is_refused(draft_use_case):
    with pytest.raises(ValueError, match="unknown policy trigger"):
        _check(draft_use_case, trigger="whenever")


def test_another_agency_cannot_run_a_policy_check(member_b, draft_use_case):
    with pytest.raises(PolicyViolation):
        policy_services.policy_evaluate(
            use_case=draft_use_case, trigger="on_demand", actor=member_b
        )


def test_a_crashing_rule_fails_rather_than_passes(
    reviewer, draft_use_case, monkeypatch
):
    _policy(reviewer, [PD])

    def boom(rule, facts):
        raise RuntimeError("database fell over")

    monkeypatch.setitem(rule_checks.EVALUATORS, "personal_data", boom)
    outcome = _outcome(draft_use_case, "pd")

    assert outcome["status"] == "failed"
    assert outcome["message"] == (
        "The rule could not be evaluated (RuntimeError); it fails until it can."
    )


# --- immutability ---------------------------------------------------------------------


def test_policy_results_cannot_be_updated_or_deleted(draft_use_case):
    result = _check(draft_use_case)

    with pytest.raises(IntegrityError, match="never changed"), transaction.atomic():
        PolicyResult.objects.filter(pk=result.pk).update(passed=False)
    with pytest.raises(IntegrityError, match="never changed"), transaction.atomic():
        PolicyResult.objects.filter(pk=result.pk).delete()
    assert PolicyResult.objects.get(pk=result.pk).passed is True


def test_there_is_no_service_that_changes_a_policy_result():
    writers = [
        name
        for name in dir(policy_services)
        if name.startswith("policy_result") or name.startswith("policy_evaluate")
    ]
    assert writers == ["policy_evaluate", "policy_evaluate_for_version"]


def test_policy_versions_and_questionnaires_cannot_be_rewritten(
    reviewer, aia_questionnaire
):
    policy = _policy(reviewer, [PD])

    with pytest.raises(IntegrityError, match="never changed"), transaction.atomic():
        Policy.objects.filter(pk=policy.pk).update(is_active=False)
    with pytest.raises(IntegrityError, match="never changed"), transaction.atomic():
        Questionnaire.objects.filter(pk=aia_questionnaire.pk).update(title="Other")


# --- policy writes and the schema -----------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"id": "x"}, "rules: {'id': 'x'} is not of type 'array'"),
        ([], "rules: [] should be non-empty"),
        (
            [{"id": "a", "kind": "required_evaluation", "suite": "small",
              "metric": "multiple_choice.acc", "min": "high"}],
            "rules[0].min: 'high' is not of type 'number'",
        ),
        (
            [{"id": "a", "kind": "required_evaluation", "suite": "small",
              "metric": "multiple_choice.acc"}],
            "rules[0]: needs at least one of 'min', 'max'",
        ),
        ([{"id": "a", "kind": "magic"}], "rules[0].kind: 'magic' is not one of"),
        ([{"id": "Bad Id", "kind": "personal_data", "mode": "forbidden"}],
         "rules[0].id: 'Bad Id' does not match"),
        ([{"id": "a", "kind": "personal_data", "mode": "sometimes"}],
         "rules[0].mode: 'sometimes' is not one of ['forbidden', "),
        ([{"id": "a", "kind": "licence", "allow": ["MIT"], "deny": ["GPL-3.0-only"]}],
         "rules[0]: must not give both 'allow' and 'deny'"),
        ([{"id": "a", "kind": "sovereignty", "hosting_jurisdictions": ["france"]}],
         "rules[0].hosting_jurisdictions[0]: 'france' does not match"),
        ([{"id": "a", "kind": "documentation", "model_card": ["colour"]}],
         "rules[0].model_card[0]: 'colour' is not one of"),
        ([{"id": "a", "kind": "size_cost", "max_parameters": 10, "colour": "red"}],
         "rules[0]: Additional properties are not allowed ('colour' was unexpected)"),
        (
            [{"id": "a", "kind": "size_cost", "max_parameters": 1},
             {"id": "a", "kind": "size_cost", "max_parameters": 2}],
            "rules[1].id: 'a' is already the id of rules[0]",
        ),
        ([{"id": "a", "kind": "licence", "allow": ["apache-2.0"]}],
         "rules[0].allow[0]: give one SPDX identifier as SPDX spells it "),
        ([{"id": "a", "kind": "licence", "deny": ["Not-A-Licence"]}],
         "rules[0].deny[0]: Unknown SPDX licence identifier(s): Not-A-Licence"),
        (
            [{"id": "a", "kind": "required_evaluation", "suite": "nope",
              "metric": "t.m", "min": 0}],
            "rules[0].suite: no evaluation suite 'nope' exists",
        ),
        (
            [{"id": "a", "kind": "required_evaluation", "suite": "small",
              "metric": "t.m", "min": 2, "max": 1}],
            "rules[0].min: 2 is greater than max 1",
        ),
    ],
)  # fmt: skip
def test_invalid_rules_are_refused_with_the_json_path(
    reviewer, small_suite, rules, message
):
    with pytest.raises(DomainError) as caught:
        _policy(reviewer, rules)

    assert caught.value.code == "invalid_rules"
    messages = [e["message"] for e in caught.value.fields["rules"]]
    assert any(m.startswith(message) for m in messages), messages
    assert not Policy.objects.exists()


def test_the_published_schema_is_draft_2020_12_and_accepts_every_kind(small_suite):
    from jsonschema import Draft202012Validator

    schema = rule_schema.schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    rules = [
        {"id": "a", "kind": "required_evaluation", "suite": "small@1.0.0",
         "metric": "multiple_choice.acc", "min": 0.5, "max": 1, "max_age_days": 90},
        {"id": "b", "kind": "licence", "allow": ["MIT"], "applies_to": ["model"]},
        {"id": "c", "kind": "licence", "require_lineage_compatibility": True},
        {"id": "d", "kind": "sovereignty", "training_jurisdictions": ["EU"],
         "hosting_jurisdictions": ["FR"], "data_origin_jurisdictions": ["EEA"],
         "base_model_jurisdictions": ["FR", "DE-BY"]},
        {"id": "e", "kind": "personal_data", "mode": "legal_basis_required"},
        {"id": "f", "kind": "documentation", "model_card": ["risks"],
         "datasheet": ["motivation"], "use_case": ["purpose"]},
        {"id": "g", "kind": "size_cost", "max_parameters": 10,
         "max_energy_j_per_1k_tokens": 1.5, "suite": "small"},
    ]  # fmt: skip
    rule_schema.validate_rules(rules)  # raises if any is refused


def test_scope_must_name_its_target(reviewer, agency_a):
    rule = [PD]

    with pytest.raises(DomainError) as no_agency:
        _policy(reviewer, rule, scope="agency")
    with pytest.raises(DomainError) as stray_tier:
        _policy(reviewer, rule, agency=agency_a, scope="agency", risk_tier="high")
    with pytest.raises(DomainError) as no_tier:
        _policy(reviewer, rule, scope="risk_tier")

    assert "agency" in no_agency.value.fields
    assert "risk_tier" in stray_tier.value.fields
    assert "risk_tier" in no_tier.value.fields


def test_only_oversight_writes_policies(member_a, maintainer_a, platform_admin):
    rule = [PD]

    for person in (member_a, maintainer_a):
        with pytest.raises(PolicyViolation):
            _policy(person, rule)
    assert _policy(platform_admin, rule).version == 1


def test_a_revision_is_a_new_row_and_the_old_one_stays(reviewer):
    first = _policy(reviewer, [PD])

    second = policy_services.policy_revise(
        actor=reviewer,
        policy=first,
        title="Stricter",
        scope="risk_tier",
        risk_tier="high",
    )

    first.refresh_from_db()
    assert (first.version, first.title, first.scope) == (
        1,
        "baseline policy",
        "platform",
    )
    assert (second.version, second.title, second.scope) == (2, "Stricter", "risk_tier")
    assert second.rules == first.rules
    event = AuditEvent.objects.filter(action="policy.revised").last()
    assert event.payload_data["previous_version"] == 1
    assert event.payload_data["changed"] == ["risk_tier", "scope", "title"]
    assert event.payload_data["rules_sha256"] == policy_services.rules_digest(
        first.rules
    )


def test_revising_an_outdated_version_or_changing_nothing_is_refused(reviewer):
    first = _policy(reviewer, [PD])
    policy_services.policy_revise(actor=reviewer, policy=first, title="Two")

    with pytest.raises(Conflict) as outdated:
        policy_services.policy_revise(actor=reviewer, policy=first, title="Three")
    latest = Policy.objects.get(name="baseline", version=2)
    with pytest.raises(DomainError) as unchanged:
        policy_services.policy_revise(actor=reviewer, policy=latest, title="Two")

    assert outdated.value.code == "policy_outdated"
    assert unchanged.value.code == "no_change"


def test_a_name_is_created_once(reviewer):
    rule = [PD]
    _policy(reviewer, rule)

    with pytest.raises(Conflict) as caught:
        _policy(reviewer, rule)
    assert caught.value.code == "policy_exists"


def test_policy_creation_is_audited_with_the_rules_digest(reviewer):
    rules = [PD]
    policy = _policy(reviewer, rules)

    event = AuditEvent.objects.filter(action="policy.created").last()
    assert event.object_id == str(policy.pk)
    assert event.payload_data["rules_sha256"] == policy_services.rules_digest(rules)
    assert event.payload_data["version"] == 1
