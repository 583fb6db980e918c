"""The modification assessment of a derived model version (read only)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.examples import response
from governance.models import ModificationAssessment
from registry.api.examples import AT, DIGEST
from registry.models import ModelVersion

MODIFICATION = {
    "id": 3,
    "model_version": 31,
    "base_version": 30,
    "artifact_digest": DIGEST,
    "base_artifact_digest": DIGEST,
    "status": "completed",
    "primary": "fine_tune",
    "classes": ["fine_tune"],
    "reasons": {"fine_tune": ["21 tensors changed value"]},
    "max_relative_change": 0.0412,
    "overall_relative_change": 0.0237,
    "graph": {"ops_added": {}, "ops_removed": {}, "signature_changed": False},
    "weights": {
        "tensors_compared": 21,
        "tensors_changed": 21,
        "shape_changes": [],
        "unmatched_base": [],
        "unmatched_derived": [],
    },
    "tokenizer": {"present": [True, True], "changed": False},
    "evaluation_deltas": [
        {
            "suite": "civitas-core@1.0.0",
            "base_run": 12,
            "run": 19,
            "metrics": [
                {
                    "task": "public-services-mc",
                    "name": "acc",
                    "base": 0.61,
                    "derived": 0.64,
                    "delta": 0.03,
                }
            ],
        }
    ],
    "error_code": "",
    "error": "",
    "compare_version": 1,
    "created_at": AT,
}


class ModificationAssessmentSerializer(serializers.ModelSerializer):
    """How a derived version differs from its base, and the classes that hold."""

    class Meta:
        model = ModificationAssessment
        fields = [
            "id", "model_version", "base_version", "artifact_digest",
            "base_artifact_digest", "status", "primary", "classes", "reasons",
            "max_relative_change", "overall_relative_change", "graph", "weights",
            "tokenizer", "evaluation_deltas", "error_code", "error",
            "compare_version", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class ModelVersionModificationView(APIView):
    """The newest modification assessment of a version against its base."""

    @extend_schema(
        responses={200: ModificationAssessmentSerializer},
        examples=[response("Fine-tuned from its base", MODIFICATION)],
    )
    def get(self, request, pk: int):
        """404 when the version is not visible, names no base or is not yet compared."""
        version = get_object_or_404(
            ModelVersion.objects.visible_to(request.user), pk=pk
        )
        assessment = ModificationAssessment.objects.current_for(version)
        if assessment is None:
            raise NotFound(
                "This version names no base version or has not been compared with "
                "it yet.",
                code="no_assessment",
            )
        return Response(ModificationAssessmentSerializer(assessment).data)
