"""HTTP endpoints for use cases, their risk assessments, and the questionnaires.

Reads go through the tenancy querysets (``visible_to``): another agency's use
case is answered 404. Each write validates its input
with an input serializer, calls one service of
``governance.services.use_cases`` and answers with the read serializer.
"""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from governance.api.examples import (
    ANSWERS_EXAMPLE,
    POLICY_RESULT,
    QUESTIONNAIRE,
    USE_CASE,
    USE_CASE_EXAMPLE,
    response,
)
from governance.api.filters import UseCaseFilter
from governance.api.serializers import (
    AssessmentSerializer,
    PolicyResultSerializer,
    QuestionnaireSerializer,
    UseCaseCreateSerializer,
    UseCaseSerializer,
    UseCaseUpdateSerializer,
)
from governance.models import (
    PolicyResult,
    PolicyTrigger,
    Questionnaire,
    UseCase,
)
from governance.services.policies import policy_evaluate
from governance.services.use_cases import (
    questionnaire_get,
    use_case_assess,
    use_case_create,
    use_case_update,
)
from registry.api.serializers import ApiErrorSerializer

ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="Invalid input"),
    403: OpenApiResponse(ApiErrorSerializer, description="Not allowed"),
    404: OpenApiResponse(ApiErrorSerializer, description="Not found or not visible"),
}


@extend_schema_view(
    list=extend_schema(
        summary="Use cases the caller may see",
        examples=[response("Contact-centre replies", USE_CASE)],
    ),
    retrieve=extend_schema(
        summary="One use case",
        responses={200: UseCaseSerializer},
        examples=[response("Contact-centre replies", USE_CASE)],
    ),
)
class UseCaseViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Use cases: their agency writes drafts, reviewers read every agency's."""

    serializer_class = UseCaseSerializer
    filterset_class = UseCaseFilter
    search_fields = ["title", "purpose", "public_service"]
    lookup_value_regex = r"\d+"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return UseCase.objects.visible_to(self.request.user).select_related(
            "agency",
            "model_version__model__agency",
            "questionnaire",
            "created_by",
            "assessed_by",
        )

    @extend_schema(
        summary="Write a draft use case",
        request=UseCaseCreateSerializer,
        responses={201: UseCaseSerializer, **ERRORS},
        examples=[OpenApiExample("Drafting replies", value=USE_CASE_EXAMPLE)],
    )
    def create(self, request):
        data = UseCaseCreateSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        use_case = use_case_create(actor=request.user, **data.validated_data)
        return Response(
            UseCaseSerializer(use_case).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Change a draft use case (409 usecase_frozen once submitted)",
        request=UseCaseUpdateSerializer,
        responses={
            200: UseCaseSerializer,
            409: OpenApiResponse(ApiErrorSerializer, description="Frozen"),
            **ERRORS,
        },
        examples=[OpenApiExample("New end date", value={"valid_until": "2028-06-30"})],
    )
    def partial_update(self, request, pk=None):
        use_case = self.get_object()
        data = UseCaseUpdateSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        use_case = use_case_update(
            actor=request.user, use_case=use_case, **data.validated_data
        )
        return Response(UseCaseSerializer(self.get_queryset().get(pk=use_case.pk)).data)

    @extend_schema(
        summary="Answer the impact questionnaire; sets the risk tier",
        request=AssessmentSerializer,
        responses={
            200: UseCaseSerializer,
            409: OpenApiResponse(ApiErrorSerializer, description="Frozen"),
            **ERRORS,
        },
        examples=[
            OpenApiExample("Drafting replies, minimal risk", value=ANSWERS_EXAMPLE)
        ],
    )
    @action(detail=True, methods=["post"])
    def assessment(self, request, pk=None):
        use_case = self.get_object()
        data = AssessmentSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reference = data.validated_data.get("questionnaire")
        use_case = use_case_assess(
            actor=request.user,
            use_case=use_case,
            answers=data.validated_data["answers"],
            questionnaire=(questionnaire_get(reference) if reference else None),
        )
        return Response(UseCaseSerializer(self.get_queryset().get(pk=use_case.pk)).data)

    @extend_schema(
        summary="Check the use case against the policies in force now",
        request=None,
        responses={201: PolicyResultSerializer, **ERRORS},
        examples=[response("Passed", POLICY_RESULT, status=201)],
    )
    @action(detail=True, methods=["post"], url_path="policy-check")
    def policy_check(self, request, pk=None):
        result = policy_evaluate(
            use_case=self.get_object(),
            trigger=PolicyTrigger.ON_DEMAND,
            actor=request.user,
        )
        return Response(
            PolicyResultSerializer(result).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="The policy results of one use case, newest first",
        responses={200: PolicyResultSerializer(many=True)},
        examples=[response("Passed", POLICY_RESULT)],
    )
    @action(detail=True, methods=["get"], url_path="policy-results")
    def policy_results(self, request, pk=None):
        use_case = self.get_object()
        results = PolicyResult.objects.filter(use_case=use_case).select_related(
            "requested_by"
        )
        page = self.paginate_queryset(results)
        return self.get_paginated_response(PolicyResultSerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(examples=[response("Impact assessment", QUESTIONNAIRE)]),
    retrieve=extend_schema(examples=[response("Impact assessment", QUESTIONNAIRE)]),
)
class QuestionnaireViewSet(viewsets.ReadOnlyModelViewSet):
    """The published impact questionnaires, every version."""

    serializer_class = QuestionnaireSerializer
    queryset = Questionnaire.objects.all()
    filterset_fields = ["name", "version"]
    lookup_value_regex = r"\d+"
