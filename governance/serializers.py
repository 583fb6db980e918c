"""API serializers of the governance app (input and output kept apart)."""

from __future__ import annotations

from rest_framework import serializers

from governance.models import EvaluationRun, EvaluationSuite, RunMetric


class EvaluationSuiteSerializer(serializers.ModelSerializer):
    """A suite as the API shows it."""

    licence = serializers.CharField(source="licence.expression")
    agency = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    is_builtin = serializers.SerializerMethodField()

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
            "tasks",
            "created_at",
        ]

    def get_is_builtin(self, suite) -> bool:
        return suite.agency_id is None


class RunMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunMetric
        fields = ["task", "name", "value"]


class EvaluationRunSerializer(serializers.ModelSerializer):
    """An evaluation run with its progress, metrics and MLflow reference."""

    suite = serializers.StringRelatedField()
    requested_by = serializers.StringRelatedField()
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
