"""HTTP endpoints for use cases, risk assessments, policies and policy results.

Reads go through the tenancy querysets (``visible_to``): another agency's use
case or agency-scoped policy is answered 404. Each write validates its input
with an input serializer, calls one service of
``governance.usecase_services`` and answers with the read serializer.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from governance import policies, usecase_services
from governance.models import (
    Policy,
    PolicyResult,
    PolicyScope,
    PolicyTrigger,
    Questionnaire,
    RiskTier,
    RuleStatus,
    UseCase,
    UseCaseStatus,
)
from governance.openapi_examples import (
    POLICY,
    POLICY_RESULT,
    POLICY_SCHEMA,
    QUESTIONNAIRE,
    USE_CASE,
    response,
)
from registry.api.serializers import ApiErrorSerializer, VisiblePrimaryKeyField
from registry.models import Agency, ModelVersion, is_oversight
from registry.services.changes import UNSET

# --- permissions ---------------------------------------------------------------


class IsOversightOrReadOnly(BasePermission):
    """Anyone signed in reads; only reviewers and platform administrators write."""

    message = "Only oversight reviewers and platform administrators write policies."

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or is_oversight(request.user)


# --- serializers: output ---------------------------------------------------------


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
    questionnaire = serializers.StringRelatedField()
    created_by = serializers.StringRelatedField()
    assessed_by = serializers.StringRelatedField()
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

    agency = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.StringRelatedField()
    is_current = serializers.BooleanField(read_only=True)

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

    class Meta:
        model = PolicyResult
        fields = [
            "id", "use_case", "model_version", "artifact_digest", "risk_tier",
            "trigger", "passed", "policies", "outcomes", "requested_by",
            "created_at",
        ]  # fmt: skip
        read_only_fields = fields


# --- serializers: input ----------------------------------------------------------


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

    agency = serializers.SlugRelatedField(
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
        child=serializers.JSONField(),
        help_text="question id to an answer id, or to a list of ids for "
        "multiple-choice questions",
    )


class PolicyFieldsSerializer(serializers.Serializer):
    """The fields of a policy version."""

    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    scope = serializers.ChoiceField(choices=PolicyScope.choices)
    agency = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Agency.objects.all(),
        required=False,
        allow_null=True,
    )
    risk_tier = serializers.ChoiceField(
        choices=RiskTier.choices, required=False, allow_blank=True
    )
    rules = serializers.JSONField(
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


# --- examples --------------------------------------------------------------------

USE_CASE_EXAMPLE = {
    "model_version": 12,
    "title": "Drafting replies to housing-benefit letters",
    "purpose": "Draft first replies to citizens' letters about housing benefit.",
    "public_service": "Housing benefit, city of A",
    "affected_people": "Claimants writing to the benefits office",
    "decision_informed": "None: caseworkers write and sign every reply.",
    "human_oversight": "A caseworker reads and edits every draft before sending.",
    "valid_until": "2027-12-31",
}
ANSWERS_EXAMPLE = {
    "questionnaire": "aia@1",
    "answers": {
        "prohibited_practices": ["none"],
        "areas": ["internal_drafting"],
        "decision_role": "assists_staff",
        "affected_people": "public_general",
        "scale": "1k_to_100k",
        "impact_on_rights": "minor",
        "reversibility": "easily",
        "personal_data_in_use": "personal",
        "data_representativeness": "partly",
        "public_interaction": "no",
        "human_oversight": "every_output",
        "explainability": "partly",
        "contestability": "yes",
        "fallback": "yes",
    },
}
POLICY_EXAMPLE = {
    "name": "high-risk-baseline",
    "title": "Baseline for high-risk uses",
    "scope": "risk_tier",
    "risk_tier": "high",
    "rules": [
        {
            "id": "mc-accuracy",
            "kind": "required_evaluation",
            "suite": "civitas-core",
            "metric": "public-services-mc.acc",
            "min": 0.7,
            "max_age_days": 90,
        },
        {"id": "open-licence", "kind": "licence", "allow": ["Apache-2.0", "MIT"]},
        {"id": "lineage", "kind": "licence", "require_lineage_compatibility": True},
        {
            "id": "eu-only",
            "kind": "sovereignty",
            "training_jurisdictions": ["EU"],
            "hosting_jurisdictions": ["FR"],
        },
        {"id": "gdpr", "kind": "personal_data", "mode": "legal_basis_required"},
        {
            "id": "card",
            "kind": "documentation",
            "model_card": ["limitations", "risks"],
            "use_case": ["human_oversight"],
        },
        {
            "id": "small",
            "kind": "size_cost",
            "max_parameters": 3000000000,
            "max_energy_j_per_1k_tokens": 50,
        },
    ],
}
ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="Invalid input"),
    403: OpenApiResponse(ApiErrorSerializer, description="Not allowed"),
    404: OpenApiResponse(ApiErrorSerializer, description="Not found or not visible"),
}


# --- use cases -------------------------------------------------------------------


class UseCaseFilter(filters.FilterSet):
    agency = filters.CharFilter(field_name="agency__slug")
    model_version = filters.NumberFilter(field_name="model_version_id")
    status = filters.ChoiceFilter(choices=UseCaseStatus.choices)
    risk_tier = filters.ChoiceFilter(choices=RiskTier.choices)

    class Meta:
        model = UseCase
        fields = ["agency", "model_version", "status", "risk_tier"]


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
        use_case = usecase_services.use_case_create(
            actor=request.user, **data.validated_data
        )
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
        use_case = usecase_services.use_case_update(
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
        use_case = usecase_services.use_case_assess(
            actor=request.user,
            use_case=use_case,
            answers=data.validated_data["answers"],
            questionnaire=(
                usecase_services.questionnaire_get(reference) if reference else None
            ),
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
        result = usecase_services.policy_evaluate(
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


# --- policy results and questionnaires -------------------------------------------


class PolicyResultFilter(filters.FilterSet):
    use_case = filters.NumberFilter(field_name="use_case_id")
    model_version = filters.NumberFilter(field_name="model_version_id")
    trigger = filters.ChoiceFilter(choices=PolicyTrigger.choices)

    class Meta:
        model = PolicyResult
        fields = ["use_case", "model_version", "trigger", "passed"]


@extend_schema_view(
    list=extend_schema(examples=[response("Passed", POLICY_RESULT)]),
    retrieve=extend_schema(examples=[response("Passed", POLICY_RESULT)]),
)
class PolicyResultViewSet(viewsets.ReadOnlyModelViewSet):
    """Policy results of the use cases the caller may see; never changed."""

    serializer_class = PolicyResultSerializer
    filterset_class = PolicyResultFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return PolicyResult.objects.visible_to(self.request.user).select_related(
            "requested_by"
        )


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


# --- policies --------------------------------------------------------------------


class PolicyFilter(filters.FilterSet):
    agency = filters.CharFilter(field_name="agency__slug")
    scope = filters.ChoiceFilter(choices=PolicyScope.choices)
    risk_tier = filters.ChoiceFilter(choices=RiskTier.choices)

    class Meta:
        model = Policy
        fields = ["name", "scope", "agency", "risk_tier", "is_active"]


@extend_schema_view(
    list=extend_schema(
        summary="The latest version of every policy the caller may see",
        description="Members see platform and risk-tier policies and their own "
        "agency's; reviewers and administrators see all. Earlier versions are "
        "listed under /policies/{id}/versions/.",
        examples=[response("Platform baseline", POLICY)],
    ),
    retrieve=extend_schema(
        summary="One policy version", examples=[response("Platform baseline", POLICY)]
    ),
)
class PolicyViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Policies: versioned rule sets; reviewers and administrators write them."""

    serializer_class = PolicySerializer
    filterset_class = PolicyFilter
    permission_classes = [IsAuthenticated, IsOversightOrReadOnly]
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        newer = Policy.objects.filter(
            name=OuterRef("name"), version__gt=OuterRef("version")
        )
        return (
            Policy.objects.visible_to(self.request.user)
            .select_related("agency", "created_by")
            .annotate(is_current=~Exists(newer))
        )

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        if self.action == "list":
            queryset = queryset.filter(is_current=True)
        return queryset

    def _fresh(self, policy: Policy) -> dict:
        return PolicySerializer(self.get_queryset().get(pk=policy.pk)).data

    @extend_schema(
        summary="Write version 1 of a new policy (reviewers and administrators)",
        request=PolicyCreateSerializer,
        responses={
            201: PolicySerializer,
            409: OpenApiResponse(ApiErrorSerializer, description="Name taken"),
            **ERRORS,
        },
        examples=[OpenApiExample("High-risk baseline", value=POLICY_EXAMPLE)],
    )
    def create(self, request):
        data = PolicyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        policy = usecase_services.policy_create(
            actor=request.user, **data.validated_data
        )
        return Response(self._fresh(policy), status=status.HTTP_201_CREATED)

    @extend_schema(
        methods=["GET"],
        summary="Every version of this policy's name, newest first",
        request=None,
        responses={200: PolicySerializer(many=True)},
        examples=[response("Latest version", POLICY)],
    )
    @extend_schema(
        methods=["POST"],
        summary="Write the next version of a policy (reviewers and administrators)",
        description="Fields left out are copied from this version, which must be "
        "the latest (409 policy_outdated otherwise). is_active=false retires it.",
        request=PolicyReviseSerializer,
        responses={
            201: PolicySerializer,
            409: OpenApiResponse(ApiErrorSerializer, description="Not the latest"),
            **ERRORS,
        },
        examples=[OpenApiExample("Retire", value={"is_active": False})],
    )
    @action(detail=True, methods=["get", "post"])
    def versions(self, request, pk=None):
        policy = self.get_object()
        if request.method == "GET":
            history = self.get_queryset().filter(name=policy.name).order_by("-version")
            page = self.paginate_queryset(history)
            return self.get_paginated_response(PolicySerializer(page, many=True).data)
        data = PolicyReviseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = {key: data.validated_data.get(key, UNSET) for key in data.fields}
        revised = usecase_services.policy_revise(
            actor=request.user, policy=policy, **changes
        )
        return Response(self._fresh(revised), status=status.HTTP_201_CREATED)


class PolicySchemaView(APIView):
    """The published JSON Schema (Draft 2020-12) that policy rules must follow."""

    @extend_schema(
        summary="JSON Schema of policy rules",
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="The schema",
                examples=[OpenApiExample("Abridged", value=POLICY_SCHEMA)],
            )
        },
    )
    def get(self, request):
        return Response(policies.schema())
