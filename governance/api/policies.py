"""HTTP endpoints for policies, their JSON Schema and policy results.

Reads go through the tenancy querysets (``visible_to``): another agency's
agency-scoped policy is answered 404. Writes call ``governance.services.policies``.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.examples import (
    POLICY,
    POLICY_EXAMPLE,
    POLICY_RESULT,
    POLICY_SCHEMA,
    response,
)
from governance.api.filters import PolicyFilter, PolicyResultFilter
from governance.api.permissions import IsOversightOrReadOnly
from governance.api.serializers import (
    PolicyCreateSerializer,
    PolicyResultSerializer,
    PolicyReviseSerializer,
    PolicySerializer,
)
from governance.models import (
    Policy,
    PolicyResult,
)
from governance.rules.schema import schema
from governance.services.policies import policy_create, policy_revise
from registry.api.serializers import ApiErrorSerializer
from registry.services.changes import UNSET

ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="Invalid input"),
    403: OpenApiResponse(ApiErrorSerializer, description="Not allowed"),
    404: OpenApiResponse(ApiErrorSerializer, description="Not found or not visible"),
}


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
        policy = policy_create(actor=request.user, **data.validated_data)
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
        revised = policy_revise(actor=request.user, policy=policy, **changes)
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
        return Response(schema())
