"""Lineage endpoints: the graph around a model version or a dataset version.

Read-only. The root is looked up through ``visible_to``, so a version the
caller may not see answers 404 exactly as one that does not exist; the graph
itself is built by ``registry.lineage``, which applies the same rule to every
neighbour.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry import lineage
from registry.models import DatasetVersion, ModelVersion


class LineageQuerySerializer(serializers.Serializer):
    """The query string of a lineage request."""

    depth = serializers.IntegerField(
        min_value=lineage.MIN_DEPTH,
        max_value=lineage.MAX_DEPTH,
        default=lineage.DEFAULT_DEPTH,
        help_text="Hops from the root to follow in each direction (1 to 10).",
    )


class LineageNodeSerializer(serializers.Serializer):
    """One node of a lineage graph."""

    id = serializers.CharField(help_text="`<type>:<key>`, unique in the graph")
    type = serializers.ChoiceField(choices=lineage.NodeType.choices)
    label = serializers.CharField()
    agency = serializers.CharField(
        allow_null=True, help_text="Slug of the owning agency; null for a run"
    )
    licence = serializers.CharField(
        allow_null=True, help_text="SPDX expression; null for a run"
    )
    direction = serializers.ChoiceField(choices=lineage.Direction.choices)
    distance = serializers.IntegerField(help_text="Hops from the root")
    version = serializers.CharField(required=False)
    derivation = serializers.CharField(
        required=False, allow_blank=True, help_text="Model versions only"
    )
    artifact_digest = serializers.CharField(
        required=False, allow_blank=True, help_text="SHA-256 of the artifact"
    )
    parameter_count = serializers.IntegerField(
        required=False, allow_null=True, help_text="Model versions only"
    )
    released_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Model versions only"
    )
    personal_data = serializers.CharField(
        required=False, help_text="Dataset versions only"
    )
    status = serializers.CharField(
        required=False, help_text="Evaluations only: the run's status"
    )
    key_metric = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="Evaluations only: the first metric, `task.name=value`",
    )
    finished_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Evaluations only"
    )
    kind = serializers.CharField(required=False, help_text="Decisions only")
    reviewer_agency = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="Decisions only: slug of the reviewer's agency",
    )
    decided_at = serializers.DateTimeField(required=False, help_text="Decisions only")
    modification_class = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Modification assessments only: the primary class",
    )
    max_relative_change = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="Modification assessments only: the largest per-tensor change",
    )


class LineageEdgeSerializer(serializers.Serializer):
    """One edge, read as the sentence `source relation target`."""

    source = serializers.CharField()
    target = serializers.CharField()
    relation = serializers.ChoiceField(choices=lineage.Relation.choices)


class LineageWarningSerializer(serializers.Serializer):
    """A licence conflict between a model version and one of its inputs."""

    node = serializers.CharField(help_text="The model version whose licence conflicts")
    related = serializers.CharField(help_text="The base or dataset version in conflict")
    code = serializers.CharField()
    message = serializers.CharField()


class LineageSerializer(serializers.Serializer):
    """A lineage graph (docs/lineage.md)."""

    root = serializers.CharField()
    nodes = LineageNodeSerializer(many=True)
    edges = LineageEdgeSerializer(many=True)
    warnings = LineageWarningSerializer(many=True)
    truncated = serializers.BooleanField(
        help_text="Visible nodes lie beyond the requested depth"
    )


_EXAMPLE = {
    "root": "model_version:7",
    "nodes": [
        {
            "id": "model_version:7",
            "type": "model_version",
            "label": "city-a/assistant@1.1.0",
            "agency": "city-a",
            "licence": "Apache-2.0",
            "direction": "root",
            "distance": 0,
            "version": "1.1.0",
            "derivation": "fine-tuned",
            "artifact_digest": "9f2c" + "0" * 60,
            "parameter_count": 156480,
            "released_at": "2026-03-02T10:00:00+00:00",
        },
        {
            "id": "model_version:5",
            "type": "model_version",
            "label": "city-a/assistant@1.0.0",
            "agency": "city-a",
            "licence": "Apache-2.0",
            "direction": "upstream",
            "distance": 1,
            "version": "1.0.0",
            "derivation": "",
            "artifact_digest": "41ab" + "0" * 60,
            "parameter_count": 156480,
            "released_at": "2026-02-01T09:00:00+00:00",
        },
        {
            "id": "dataset_version:3",
            "type": "dataset_version",
            "label": "city-a/citizen-requests@1.0.0",
            "agency": "city-a",
            "licence": "CC-BY-NC-4.0",
            "direction": "upstream",
            "distance": 1,
            "version": "1.0.0",
            "personal_data": "pseudonymised",
            "artifact_digest": "",
        },
    ],
    "edges": [
        {
            "source": "model_version:5",
            "target": "model_version:7",
            "relation": "base_of",
        },
        {
            "source": "model_version:7",
            "target": "dataset_version:3",
            "relation": "fine_tuned_on",
        },
    ],
    "warnings": [
        {
            "node": "model_version:7",
            "related": "dataset_version:3",
            "code": "licence_incompatible",
            "message": (
                "The fine-tuning data city-a/citizen-requests@1.0.0 is licensed "
                "CC-BY-NC-4.0, but this model version is licensed Apache-2.0: "
                "CC-BY-NC-4.0 forbids commercial use; a derivative must not be "
                "licensed for it, as Apache-2.0 is."
            ),
        }
    ],
    "truncated": False,
}

_RESPONSES = {
    200: LineageSerializer,
    400: OpenApiResponse(
        description="`depth` outside 1..10: `validation_error` with `fields.depth`"
    ),
    401: OpenApiResponse(description="No credentials"),
    404: OpenApiResponse(description="No such version visible to the caller"),
}


def _depth(request: Request) -> int:
    """The validated ``depth`` query parameter; a bad one raises a 400."""
    query = LineageQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data["depth"]


class ModelVersionLineageView(APIView):
    """The lineage graph around one model version."""

    @extend_schema(
        operation_id="model_versions_lineage",
        summary="Lineage of a model version",
        description=(
            "Base versions, datasets and training run upstream; derived versions "
            "downstream; licence conflicts along the way. Only what the caller "
            "may see appears."
        ),
        parameters=[LineageQuerySerializer],
        responses=_RESPONSES,
        examples=[OpenApiExample("Fine-tuned version", value=_EXAMPLE)],
        tags=["lineage"],
    )
    def get(self, request: Request, pk: int) -> Response:
        depth = _depth(request)
        version = get_object_or_404(
            ModelVersion.objects.visible_to(request.user), pk=pk
        )
        graph = lineage.model_version_lineage(version, user=request.user, depth=depth)
        return Response(LineageSerializer(graph).data)


class DatasetVersionLineageView(APIView):
    """The lineage graph downstream of one dataset version."""

    @extend_schema(
        operation_id="dataset_versions_lineage",
        summary="Lineage of a dataset version",
        description=(
            "The model versions trained, fine-tuned or evaluated on this dataset "
            "version and the versions derived from them, with licence conflicts. "
            "Only what the caller may see appears."
        ),
        parameters=[LineageQuerySerializer],
        responses=_RESPONSES,
        examples=[OpenApiExample("Dataset used by a model", value=_EXAMPLE)],
        tags=["lineage"],
    )
    def get(self, request: Request, pk: int) -> Response:
        depth = _depth(request)
        dataset_version = get_object_or_404(
            DatasetVersion.objects.visible_to(request.user), pk=pk
        )
        graph = lineage.dataset_version_lineage(
            dataset_version, user=request.user, depth=depth
        )
        return Response(LineageSerializer(graph).data)
