"""Suite endpoints: read the suites the caller may run; an agency registers its own.

``POST /suites/`` registers a suite, ``POST /suites/{id}/versions/`` a new
version of one (linked to it), ``PATCH`` and ``DELETE`` change or remove a
suite no run has used yet (``409 suite_in_use`` after). Every write is one
service of ``governance.services.suites``.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from config.exceptions import ApiErrorSerializer
from governance.api.examples import SUITE, response
from governance.api.serializers import (
    EvaluationSuiteSerializer,
    SuiteInputSerializer,
    SuiteUpdateSerializer,
    SuiteVersionInputSerializer,
)
from governance.models import EvaluationRun, EvaluationSuite
from governance.services import suites as suite_services
from registry.api.catalogue import BoundedJSONParser

BUILTIN_SUITE = {
    **SUITE,
    "visibility": "agency",
    "metrics": [],
    "thresholds": {},
    "previous": None,
    "is_used": True,
}
AGENCY_SUITE = {
    **SUITE,
    "id": 12,
    "name": "tax-office-answers",
    "version": "1.1.0",
    "description": "Questions citizens ask the tax office, with staff answers.",
    "agency": "tax-office",
    "is_builtin": False,
    "visibility": "agency",
    "tasks": [
        {
            "task": "generation",
            "name": "tax-answers",
            "dataset_version": 41,
            "options": {"max_new_tokens": 32, "stop": ["\n"]},
        }
    ],
    "metrics": ["tax-answers.exact_match", "tax-answers.f1", "tax-answers.rougeL"],
    "thresholds": {"tax-answers.f1": {"min": 0.6}},
    "previous": "tax-office-answers@1.0.0",
    "is_used": False,
}
AGENCY_SUITE_INPUT = {
    "name": "tax-office-answers",
    "version": "1.1.0",
    "description": AGENCY_SUITE["description"],
    "licence": "CC-BY-4.0",
    "tasks": AGENCY_SUITE["tasks"],
    "metrics": AGENCY_SUITE["metrics"],
    "thresholds": AGENCY_SUITE["thresholds"],
    "visibility": "agency",
}
REFUSED_WITHOUT_DATASHEET = {
    "code": "datasheet_missing",
    "message": "tasks[0].dataset_version: tax-questions@1.0.0 has no datasheet "
    "(motivation, composition empty); fill it in before a suite uses the data.",
    "fields": {
        "tasks": [
            {
                "code": "datasheet_missing",
                "message": "tasks[0].dataset_version: tax-questions@1.0.0 has no "
                "datasheet (motivation, composition empty); fill it in before a "
                "suite uses the data.",
            }
        ]
    },
}
IN_USE = {
    "code": "suite_in_use",
    "message": "Suite tax-office-answers@1.0.0 has been used by an evaluation and "
    "can no longer be changed; register a new version instead.",
}


@extend_schema_view(
    list=extend_schema(
        examples=[
            response("Built-in suite", BUILTIN_SUITE),
            response("Agency suite", AGENCY_SUITE),
        ]
    ),
    retrieve=extend_schema(examples=[response("Agency suite", AGENCY_SUITE)]),
    create=extend_schema(
        request=SuiteInputSerializer,
        responses={
            201: EvaluationSuiteSerializer,
            400: OpenApiResponse(ApiErrorSerializer),
            409: OpenApiResponse(ApiErrorSerializer),
        },
        examples=[
            OpenApiExample(
                "Generated answers with a threshold",
                value=AGENCY_SUITE_INPUT,
                request_only=True,
            ),
            response("Registered", {**AGENCY_SUITE, "previous": None}, status=201),
            response(
                "Dataset without a datasheet", REFUSED_WITHOUT_DATASHEET, status=400
            ),
        ],
    ),
    partial_update=extend_schema(
        request=SuiteUpdateSerializer,
        responses={
            200: EvaluationSuiteSerializer,
            409: OpenApiResponse(ApiErrorSerializer),
        },
        examples=[
            OpenApiExample(
                "Share it", value={"visibility": "shared"}, request_only=True
            ),
            response("Shared", {**AGENCY_SUITE, "visibility": "shared"}),
            response("Already used", IN_USE, status=409),
        ],
    ),
    destroy=extend_schema(
        responses={204: None, 409: OpenApiResponse(ApiErrorSerializer)},
    ),
)
class EvaluationSuiteViewSet(
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.ReadOnlyModelViewSet,
):
    """Suites the caller may run: built-in, shared, and their agency's own."""

    serializer_class = EvaluationSuiteSerializer
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created_at"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    # JSON only: tasks and thresholds are nested objects no form can carry.
    parser_classes = [BoundedJSONParser]

    def get_queryset(self):
        used = EvaluationRun.objects.filter(suite=OuterRef("pk"))
        return (
            EvaluationSuite.objects.visible_to(self.request.user)
            .select_related("licence", "agency", "previous")
            .annotate(is_used=Exists(used))
        )

    def create(self, request, *args, **kwargs):
        """Register a suite of the caller's agency."""
        data = SuiteInputSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        suite = suite_services.suite_register(actor=request.user, **data.validated_data)
        return Response(
            EvaluationSuiteSerializer(suite).data, status=status.HTTP_201_CREATED
        )

    def partial_update(self, request, *args, **kwargs):
        """Change an unused suite's description, visibility, metrics or thresholds."""
        data = SuiteUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        suite = suite_services.suite_update(
            actor=request.user, suite=self.get_object(), **data.validated_data
        )
        return Response(EvaluationSuiteSerializer(suite).data)

    def destroy(self, request, *args, **kwargs):
        """Delete an unused suite of the caller's agency."""
        suite_services.suite_delete(actor=request.user, suite=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=SuiteVersionInputSerializer,
        responses={201: EvaluationSuiteSerializer},
        examples=[
            OpenApiExample(
                "A stricter threshold",
                value={
                    "version": "1.2.0",
                    "thresholds": {"tax-answers.f1": {"min": 0.7}},
                },
                request_only=True,
            ),
            response(
                "Registered",
                {
                    **AGENCY_SUITE,
                    "id": 13,
                    "version": "1.2.0",
                    "thresholds": {"tax-answers.f1": {"min": 0.7}},
                    "previous": "tax-office-answers@1.1.0",
                },
                status=201,
            ),
        ],
    )
    @action(detail=True, methods=["post"])
    def versions(self, request, pk=None):
        """Register a new version of this suite; what is not given is copied."""
        suite = self.get_object()
        data = SuiteVersionInputSerializer(
            data=request.data, context={"request": request}
        )
        data.is_valid(raise_exception=True)
        new = suite_services.suite_version_create(
            actor=request.user, suite=suite, **data.validated_data
        )
        return Response(
            EvaluationSuiteSerializer(new).data, status=status.HTTP_201_CREATED
        )
