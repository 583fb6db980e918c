"""Evaluation endpoints: ask for a run, follow it, cancel it, read its items."""

from __future__ import annotations

from django.core.files.storage import storages
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from config.exceptions import Conflict
from governance.api.examples import (
    CANCELLED_RUN,
    EVALUATION_ITEMS,
    EVALUATION_RUN,
    response,
)
from governance.api.filters import EvaluationRunFilter
from governance.api.serializers import (
    EvaluationRequestSerializer,
    EvaluationRunSerializer,
)
from governance.models import (
    EvaluationRun,
    EvaluationSuite,
)
from governance.services.evaluations import evaluation_cancel, evaluation_request
from registry.models import ModelVersion


@extend_schema_view(
    list=extend_schema(examples=[response("Succeeded run", EVALUATION_RUN)]),
    retrieve=extend_schema(examples=[response("Succeeded run", EVALUATION_RUN)]),
)
class EvaluationRunViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Evaluation runs of the versions the caller may see."""

    serializer_class = EvaluationRunSerializer
    filterset_class = EvaluationRunFilter
    ordering_fields = ["requested_at", "finished_at"]

    def get_queryset(self):
        return (
            EvaluationRun.objects.visible_to(self.request.user)
            .select_related("suite", "requested_by")
            .prefetch_related("metrics")
        )

    @extend_schema(
        request=None,
        responses={200: EvaluationRunSerializer},
        examples=[response("Cancelled while running", CANCELLED_RUN)],
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a queued or running evaluation (409 once finished)."""
        run = evaluation_cancel(actor=request.user, run=self.get_object())
        return Response(EvaluationRunSerializer(run).data)

    @extend_schema(
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR,
                description="One JSON object per evaluated item",
                examples=[OpenApiExample("Two items", value=EVALUATION_ITEMS)],
            )
        }
    )
    @action(detail=True, methods=["get"])
    def items(self, request, pk=None):
        """Per-item results of a succeeded run as JSON Lines, streamed."""
        run = self.get_object()
        if not run.items_key:
            raise Conflict("This run has no per-item results.", code="no_items")
        return FileResponse(
            storages["artifacts"].open(run.items_key, "rb"),
            content_type="application/x-ndjson",
            as_attachment=True,
            filename=f"evaluation-{run.pk}-items.jsonl",
        )


def _suite_by_reference(reference: str, user) -> EvaluationSuite:
    name, _, version = reference.partition("@")
    suites = EvaluationSuite.objects.visible_to(user).filter(name=name)
    if version:
        suites = suites.filter(version=version)
    suite = suites.order_by("-created_at").first()
    if suite is None:
        raise ValidationError({"suite": [f"No suite '{reference}' is available."]})
    return suite


class ModelVersionEvaluationsView(APIView):
    """Ask for an evaluation of a model version on a suite."""

    @extend_schema(
        request=EvaluationRequestSerializer,
        responses={202: EvaluationRunSerializer},
        examples=[
            OpenApiExample(
                "Core suite", value={"suite": "civitas-core"}, request_only=True
            ),
            response(
                "Queued",
                {
                    **EVALUATION_RUN,
                    "status": "queued",
                    "progress": 0.0,
                    "progress_note": "",
                    "started_at": None,
                    "finished_at": None,
                    "attempts": 0,
                    "metrics": [],
                    "results": [],
                    "environment": {},
                    "mlflow_run_id": "",
                    "engine_version": "",
                    "wall_seconds": None,
                },
                status=202,
            ),
        ],
    )
    def post(self, request, pk: int):
        version = get_object_or_404(
            ModelVersion.objects.visible_to(request.user), pk=pk
        )
        data = EvaluationRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        suite = _suite_by_reference(data.validated_data["suite"], request.user)
        run = evaluation_request(actor=request.user, model_version=version, suite=suite)
        return Response(
            EvaluationRunSerializer(run).data, status=status.HTTP_202_ACCEPTED
        )
