"""Serializers of the governance API: read (output) and input serializers."""

from __future__ import annotations

from rest_framework import serializers

from engine.evaluate import TASKS as SUITE_TASKS
from governance.models import (
    Attestation,
    Decision,
    EvaluationRun,
    EvaluationSuite,
    Policy,
    PolicyResult,
    PolicyScope,
    Questionnaire,
    RiskTier,
    RuleStatus,
    RunMetric,
    Submission,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
    Waiver,
)
from governance.models.evaluations import SuiteVisibility
from governance.services.lifecycle import (
    RATIONALE_MAX_LENGTH,
    WAIVER_MAX_JUSTIFICATION,
    WAIVER_MIN_JUSTIFICATION,
)
from registry.api.serializers import (
    AgencyUserNameField,
    LicenceExpressionField,
    VisiblePrimaryKeyField,
)
from registry.models import Agency, DatasetVersion, ModelVersion


def no_nul_characters(value) -> None:
    """Refuse a JSON value with a NUL character anywhere: PostgreSQL cannot store it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            raise serializers.ValidationError(
                "Null characters are not allowed.", code="null_characters_not_allowed"
            )


class EvaluationSuiteSerializer(serializers.ModelSerializer):
    """A suite as the API shows it."""

    licence = serializers.CharField(source="licence.expression")
    # Null for a built-in suite, as the schema says.
    agency = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    is_builtin = serializers.SerializerMethodField()
    is_used = serializers.SerializerMethodField(
        help_text="A run used it: it can no longer be changed or deleted."
    )
    previous = serializers.StringRelatedField(
        allow_null=True,
        help_text="The version this one replaces, as name@version, or null.",
    )

    class Meta:
        model = EvaluationSuite
        fields = [
            "id",
            "name",
            "version",
            "description",
            "licence",
            "agency",
            "is_builtin",
            "visibility",
            "tasks",
            "metrics",
            "thresholds",
            "previous",
            "is_used",
            "created_at",
        ]

    def get_is_builtin(self, suite) -> bool:
        return suite.agency_id is None

    def get_is_used(self, suite) -> bool:
        used = getattr(suite, "is_used", None)
        return suite.runs.exists() if used is None else bool(used)


class AgencySlugField(serializers.SlugRelatedField):
    """An agency by slug; a slug with a NUL character is refused before any query."""

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            raise serializers.ValidationError(
                "Null characters are not allowed.", code="null_characters_not_allowed"
            )
        return super().to_internal_value(data)


class RunMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunMetric
        fields = ["task", "name", "value"]


class EvaluationRunSerializer(serializers.ModelSerializer):
    """An evaluation run with its progress, metrics and MLflow reference."""

    suite = serializers.StringRelatedField()
    requested_by = AgencyUserNameField(agency="model_version__model__agency_id")
    metrics = RunMetricSerializer(many=True, read_only=True)

    class Meta:
        model = EvaluationRun
        fields = [
            "id",
            "model_version",
            "suite",
            "status",
            "progress",
            "progress_note",
            "requested_by",
            "requested_at",
            "started_at",
            "finished_at",
            "artifact_digest",
            "attempts",
            "failure_code",
            "failure_reason",
            "metrics",
            "results",
            "environment",
            "mlflow_run_id",
            "engine_version",
            "wall_seconds",
        ]
        read_only_fields = fields


class EvaluationRequestSerializer(serializers.Serializer):
    """Input of ``POST /model-versions/{id}/evaluations/``."""

    suite = serializers.CharField(
        help_text="Suite name (its latest version) or name@version, e.g. civitas-core"
    )


class QuestionnaireSerializer(serializers.ModelSerializer):
    """A published questionnaire with its full definition."""

    class Meta:
        model = Questionnaire
        fields = ["id", "name", "version", "title", "definition", "created_at"]
        read_only_fields = fields


class UseCaseSerializer(serializers.ModelSerializer):
    """A use case with its risk assessment (empty until assessed)."""

    agency = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    model_version_label = serializers.SerializerMethodField()
    questionnaire = serializers.StringRelatedField(allow_null=True)
    created_by = AgencyUserNameField(agency="agency_id")
    assessed_by = AgencyUserNameField(agency="agency_id")
    is_editable = serializers.BooleanField(read_only=True)

    class Meta:
        model = UseCase
        fields = [
            "id", "agency", "model_version", "model_version_label", "title",
            "purpose", "public_service", "affected_people", "decision_informed",
            "human_oversight", "valid_until", "status", "is_editable",
            "risk_tier", "risk_score", "questionnaire", "answers", "risk_reasons",
            "assessed_at", "assessed_by", "created_by", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_model_version_label(self, use_case: UseCase) -> str:
        return str(use_case.model_version)


class PolicySerializer(serializers.ModelSerializer):
    """One version of a policy; ``is_current`` marks the latest of its name."""

    agency = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    created_by = AgencyUserNameField(agency="agency_id")
    is_current = serializers.BooleanField(read_only=True)
    # Blank for a policy of the whole platform or of one agency, as the schema says.
    risk_tier = serializers.ChoiceField(
        choices=RiskTier.choices, allow_blank=True, read_only=True
    )

    class Meta:
        model = Policy
        fields = [
            "id", "name", "version", "is_current", "title", "description", "scope",
            "agency", "risk_tier", "rules", "is_active", "created_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class PolicyRefSerializer(serializers.Serializer):
    """A policy version a result evaluated."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    title = serializers.CharField()
    scope = serializers.ChoiceField(choices=PolicyScope.choices)


class PolicyOutcomeSerializer(serializers.Serializer):
    """What one rule concluded, with its evidence and a readable sentence."""

    policy = serializers.CharField()
    policy_id = serializers.IntegerField()
    policy_version = serializers.IntegerField()
    rule_id = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.ChoiceField(choices=RuleStatus.choices)
    evidence = serializers.DictField(
        child=serializers.JSONField(),
        help_text="Run ids, values, jurisdictions, licences: what the verdict rests on",
    )
    message = serializers.CharField(help_text="One or more sentences for a reviewer")


class PolicyResultSerializer(serializers.ModelSerializer):
    """An immutable policy verdict on one use case."""

    policies = PolicyRefSerializer(many=True, read_only=True)
    outcomes = PolicyOutcomeSerializer(many=True, read_only=True)
    requested_by = serializers.StringRelatedField()
    # Blank when the use case had no risk tier yet, as the schema says.
    risk_tier = serializers.ChoiceField(
        choices=RiskTier.choices, allow_blank=True, read_only=True
    )

    class Meta:
        model = PolicyResult
        fields = [
            "id", "use_case", "model_version", "artifact_digest", "risk_tier",
            "trigger", "passed", "policies", "outcomes", "requested_by",
            "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class UseCaseFieldsSerializer(serializers.Serializer):
    """The fields of a use case its agency writes."""

    model_version = VisiblePrimaryKeyField(model=ModelVersion)
    title = serializers.CharField(max_length=200)
    purpose = serializers.CharField()
    public_service = serializers.CharField(max_length=300)
    affected_people = serializers.CharField(required=False, allow_blank=True)
    decision_informed = serializers.CharField(required=False, allow_blank=True)
    human_oversight = serializers.CharField(required=False, allow_blank=True)
    valid_until = serializers.DateField()


class UseCaseCreateSerializer(UseCaseFieldsSerializer):
    """Input of ``POST /use-cases/``; ``agency`` only for platform administrators."""

    agency = AgencySlugField(
        slug_field="slug", queryset=Agency.objects.all(), required=False
    )


class UseCaseUpdateSerializer(UseCaseFieldsSerializer):
    """Input of ``PATCH /use-cases/{id}/``: any subset of the fields."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False


class AssessmentSerializer(serializers.Serializer):
    """Input of ``POST /use-cases/{id}/assessment/``."""

    questionnaire = serializers.CharField(
        required=False,
        help_text="name or name@version; the latest 'aia' when left out",
    )
    answers = serializers.DictField(
        child=serializers.JSONField(validators=[no_nul_characters]),
        help_text="question id to an answer id, or to a list of ids for "
        "multiple-choice questions",
    )


class PolicyFieldsSerializer(serializers.Serializer):
    """The fields of a policy version."""

    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    scope = serializers.ChoiceField(choices=PolicyScope.choices)
    agency = AgencySlugField(
        slug_field="slug",
        queryset=Agency.objects.all(),
        required=False,
        allow_null=True,
    )
    risk_tier = serializers.ChoiceField(
        choices=RiskTier.choices, required=False, allow_blank=True
    )
    rules = serializers.JSONField(
        validators=[no_nul_characters],
        help_text="A list of rules valid against GET /api/v1/policies/schema/"
    )
    is_active = serializers.BooleanField(required=False)


class PolicyCreateSerializer(PolicyFieldsSerializer):
    """Input of ``POST /policies/``: version 1 of a new policy name."""

    name = serializers.SlugField(max_length=80)


class PolicyReviseSerializer(PolicyFieldsSerializer):
    """Input of ``POST /policies/{id}/versions/``: what changes in the next version."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False


class SubmissionSerializer(serializers.ModelSerializer):
    """A submission: the frozen content of a use case, as reviewed."""

    submitted_by = serializers.StringRelatedField()
    snapshot = serializers.JSONField(read_only=True)

    class Meta:
        model = Submission
        fields = [
            "id", "use_case", "number", "submitted_by", "submitted_at",
            "model_version", "artifact_digest", "policy_result", "snapshot",
            "snapshot_sha256",
        ]  # fmt: skip
        read_only_fields = fields


class TransitionSerializer(serializers.ModelSerializer):
    """One status change of a use case; ``actor`` empty when the platform acted."""

    actor = serializers.StringRelatedField()
    from_status = serializers.ChoiceField(choices=UseCaseStatus.choices, read_only=True)
    to_status = serializers.ChoiceField(choices=UseCaseStatus.choices, read_only=True)

    class Meta:
        model = UseCaseTransition
        fields = [
            "id", "use_case", "from_status", "to_status", "actor", "reason",
            "submission", "decision", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class WaiverSerializer(serializers.ModelSerializer):
    """A written exemption of named failed rules of one policy result."""

    granted_by = serializers.StringRelatedField()
    rule_ids = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Waiver
        fields = [
            "id", "use_case", "policy_result", "rule_ids", "justification",
            "granted_by", "granted_at",
        ]  # fmt: skip
        read_only_fields = fields


class DecisionSerializer(serializers.ModelSerializer):
    """A reviewer's decision, with the waiver it relied on and its attestation."""

    reviewer = serializers.StringRelatedField()
    waiver = WaiverSerializer(read_only=True)
    from_status = serializers.ChoiceField(choices=UseCaseStatus.choices, read_only=True)
    to_status = serializers.ChoiceField(choices=UseCaseStatus.choices, read_only=True)
    attestation = serializers.SerializerMethodField()

    class Meta:
        model = Decision
        fields = [
            "id", "use_case", "submission", "review_round", "model_version",
            "artifact_digest", "kind", "reviewer", "rationale", "policy_result",
            "waiver", "from_status", "to_status", "decided_at", "approved_at",
            "expires_at", "attestation",
        ]  # fmt: skip
        read_only_fields = fields

    def get_attestation(self, decision: Decision) -> str | None:
        """SHA-256 of the signed statement; download it at ``.../attestation/``."""
        try:
            return decision.attestation.statement_sha256
        except Attestation.DoesNotExist:
            return None


class AttestationSerializer(serializers.ModelSerializer):
    """A signed statement and its DSSE envelope."""

    statement = serializers.JSONField(read_only=True)
    envelope = serializers.JSONField(read_only=True)

    class Meta:
        model = Attestation
        fields = [
            "id", "run", "decision", "payload_type", "statement_sha256", "key_id",
            "statement", "envelope", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class InServiceSerializer(serializers.Serializer):
    """One use case in service at the instant asked, and the version it ran."""

    use_case = serializers.IntegerField(source="use_case.pk")
    use_case_title = serializers.CharField(source="use_case.title")
    agency = serializers.CharField(source="use_case.agency.slug")
    model_version = serializers.IntegerField(source="model_version.pk")
    model_version_label = serializers.CharField(source="model_version.__str__")
    artifact_digest = serializers.CharField(source="decision.artifact_digest")
    decision = serializers.IntegerField(source="decision.pk")
    approved_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


class InServiceResponseSerializer(serializers.Serializer):
    """The answer to "what was in service at this instant"."""

    at = serializers.DateTimeField()
    count = serializers.IntegerField()
    results = InServiceSerializer(many=True)


class WaiverInputSerializer(serializers.Serializer):
    """The failed rules an approval waives, and why."""

    rule_ids = serializers.ListField(
        child=serializers.CharField(max_length=200),
        min_length=1,
        max_length=100,
        help_text="Failed rules as policy/rule_id (or rule_id when unambiguous)",
    )
    justification = serializers.CharField(
        max_length=WAIVER_MAX_JUSTIFICATION,
        help_text=f"At least {WAIVER_MIN_JUSTIFICATION} characters",
    )


class DecisionInputSerializer(serializers.Serializer):
    """Input of every decision: a rationale; approvals may carry a waiver."""

    rationale = serializers.CharField(max_length=RATIONALE_MAX_LENGTH)
    waiver = WaiverInputSerializer(required=False)


# --- Agency suites: input ------------------------------------------------------


class SuiteTaskInputSerializer(serializers.Serializer):
    """One task of a suite: what to run over which dataset version."""

    task = serializers.ChoiceField(choices=list(SUITE_TASKS))
    name = serializers.SlugField(
        max_length=80,
        required=False,
        help_text="The task's name in metric keys (task name.metric); "
        "default: the task.",
    )
    dataset_version = VisiblePrimaryKeyField(
        model=DatasetVersion,
        help_text="A dataset version with a datasheet whose JSONL file holds "
        "the items, one per line, in the task's schema.",
    )
    options = serializers.DictField(required=False, default=dict)


class SuiteThresholdSerializer(serializers.Serializer):
    """Bounds a run's metric must meet: a minimum, a maximum or both."""

    min = serializers.FloatField(required=False)
    max = serializers.FloatField(required=False)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError(
                "Give min, max or both.", code="invalid_threshold"
            )
        if attrs.get("min", float("-inf")) > attrs.get("max", float("inf")):
            raise serializers.ValidationError(
                "min is greater than max.", code="invalid_threshold"
            )
        return attrs


class SuiteInputSerializer(serializers.Serializer):
    """Input of ``POST /suites/``: an agency registers a suite."""

    name = serializers.SlugField(max_length=80)
    version = serializers.CharField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    licence = LicenceExpressionField(
        help_text="SPDX expression of a registered licence"
    )
    # A ListField, not many=True: the schema then says minItems 1.
    tasks = serializers.ListField(
        child=SuiteTaskInputSerializer(), allow_empty=False, min_length=1
    )
    metrics = serializers.ListField(
        child=serializers.CharField(max_length=120),
        required=False,
        default=list,
        help_text='The metrics the suite is about, as "task name.metric".',
    )
    thresholds = serializers.DictField(
        child=SuiteThresholdSerializer(),
        required=False,
        default=dict,
        help_text='Per "task name.metric", the bounds a run must meet.',
    )
    visibility = serializers.ChoiceField(
        choices=SuiteVisibility.choices, default=SuiteVisibility.AGENCY
    )

    def validate(self, attrs):
        no_nul_characters(attrs.get("tasks"))
        return attrs


class SuiteVersionInputSerializer(SuiteInputSerializer):
    """Input of ``POST /suites/{id}/versions/``: what differs from that version."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields.pop("name")
        for name, field in self.fields.items():
            if name != "version":
                field.required = False
                field.default = serializers.empty


class SuiteUpdateSerializer(serializers.Serializer):
    """Input of ``PATCH /suites/{id}/`` (an unused suite only)."""

    description = serializers.CharField(required=False, allow_blank=True)
    visibility = serializers.ChoiceField(
        choices=SuiteVisibility.choices, required=False
    )
    metrics = serializers.ListField(
        child=serializers.CharField(max_length=120), required=False
    )
    thresholds = serializers.DictField(
        child=SuiteThresholdSerializer(), required=False
    )
