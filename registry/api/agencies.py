"""REST API of agencies, their people and the caller under /api/v1/.

Agencies are read through the selectors like every catalogue object (see
``registry.api.catalogue``); people are managed by the agency's maintainers
through ``registry.services``.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status
from rest_framework.response import Response
from rest_framework.views import APIView

from registry import selectors, services
from registry.api.catalogue import (
    READ_ERRORS,
    WRITE_ERRORS,
    CatalogueViewSet,
    errors,
)
from registry.api.examples import (
    AGENCY,
    ME,
    MEMBERSHIP,
    request,
    response,
)
from registry.api.filters import (
    AgencyFilter,
    MembershipFilter,
)
from registry.api.serializers import (
    AgencyCreateSerializer,
    AgencySerializer,
    AgencyUpdateSerializer,
    MembershipCreateSerializer,
    MembershipSerializer,
    MembershipUpdateSerializer,
    MeSerializer,
)
from registry.models import Agency, Membership

# --- agencies and people -------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List agencies",
        description="Oversight sees every agency; others see their own.",
        responses={200: AgencySerializer(many=True), **errors(401)},
        examples=[response("Arden City Council", AGENCY)],
    ),
    retrieve=extend_schema(
        summary="Read an agency",
        responses={200: AgencySerializer, **READ_ERRORS},
        examples=[response("Arden City Council", AGENCY)],
    ),
    create=extend_schema(
        summary="Register an agency (platform administrators)",
        request=AgencyCreateSerializer,
        responses={201: AgencySerializer, **WRITE_ERRORS},
        examples=[
            OpenApiExample(
                "City council",
                value={
                    "name": "City of Lyon",
                    "slug": "lyon",
                    "jurisdiction": "FR",
                    "contact_email": "ai@lyon.example.gov",
                },
                request_only=True,
            ),
            response("Registered", AGENCY, status=201),
        ],
    ),
    partial_update=extend_schema(
        summary="Change an agency (its maintainers)",
        request=AgencyUpdateSerializer,
        responses={200: AgencySerializer, **WRITE_ERRORS},
        examples=[
            request("New contact", {"contact_name": "Digital Services Unit"}),
            response("Changed", AGENCY),
        ],
    ),
)
class AgencyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogueViewSet):
    """Agencies, the tenants of the platform."""

    serializer_class = AgencySerializer
    filterset_class = AgencyFilter
    lookup_field = "slug"
    search_fields = ["name", "description"]
    ordering_fields = ["name", "slug", "created_at"]

    def get_queryset(self):
        return selectors.agency_list(self.request.user)

    def create(self, request):
        data = AgencyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agency = services.agency_create(actor=request.user, **data.validated_data)
        return Response(AgencySerializer(agency).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, slug=None):
        agency = self.get_object()
        data = AgencyUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        agency = services.agency_update(
            actor=request.user, agency=agency, **data.validated_data
        )
        return Response(AgencySerializer(agency).data)


@extend_schema_view(
    list=extend_schema(
        summary="List an agency's people",
        responses={200: MembershipSerializer(many=True), **READ_ERRORS},
        examples=[response("A member", MEMBERSHIP)],
    ),
    retrieve=extend_schema(
        summary="Read one person's membership",
        responses={200: MembershipSerializer, **READ_ERRORS},
        examples=[response("A member", MEMBERSHIP)],
    ),
    create=extend_schema(
        summary="Add a person to the agency",
        description=(
            "Maintainers add members and maintainers; only platform "
            "administrators grant reviewer or admin."
        ),
        request=MembershipCreateSerializer,
        responses={201: MembershipSerializer, **WRITE_ERRORS},
        examples=[
            OpenApiExample(
                "New engineer",
                value={"username": "j.martin", "role": "member"},
                request_only=True,
            ),
            response("Added", MEMBERSHIP, status=201),
        ],
    ),
    partial_update=extend_schema(
        summary="Change a person's role (audited as membership.role_changed)",
        request=MembershipUpdateSerializer,
        responses={200: MembershipSerializer, **WRITE_ERRORS},
        examples=[
            request("Promote", {"role": "maintainer"}),
            response("Promoted", {**MEMBERSHIP, "role": "maintainer"}),
        ],
    ),
    destroy=extend_schema(
        summary="Remove a person from the agency",
        responses={204: None, **errors(401, 403, 404)},
    ),
)
class MembershipViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogueViewSet
):
    """The people of one agency and their roles."""

    serializer_class = MembershipSerializer
    filterset_class = MembershipFilter
    lookup_field = "user__username"
    lookup_url_kwarg = "username"
    search_fields = ["user__username", "user__email"]
    ordering_fields = ["created_at", "role"]

    def agency(self) -> Agency:
        """The agency named in the URL, if the caller may read it (else 404)."""
        if not hasattr(self, "_agency"):
            lookup = {"slug": self.kwargs["agency_slug"]}
            agency = selectors.agency_list(self.request.user).filter(**lookup).first()
            if agency is None:
                raise Http404
            self._agency = agency
        return self._agency

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            # Schema generation has no URL, hence no agency to scope by.
            return Membership.objects.none()
        return selectors.membership_list(self.request.user, self.agency())

    def create(self, request, agency_slug=None):
        agency = self.agency()
        data = MembershipCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_add(
            actor=request.user,
            agency=agency,
            user=data.validated_data["username"],
            role=data.validated_data["role"],
        )
        return Response(
            MembershipSerializer(membership).data, status=status.HTTP_201_CREATED
        )

    def partial_update(self, request, agency_slug=None, username=None):
        membership = self.get_object()
        data = MembershipUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_set_role(
            actor=request.user, membership=membership, role=data.validated_data["role"]
        )
        return Response(MembershipSerializer(membership).data)

    def destroy(self, request, agency_slug=None, username=None):
        services.membership_remove(actor=request.user, membership=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- the caller ----------------------------------------------------------------


class MeView(APIView):
    """Who the caller is: username, role and agency."""

    @extend_schema(
        summary="Who am I",
        responses={200: MeSerializer, **errors(401)},
        examples=[response("A member of Arden City Council", ME)],
    )
    def get(self, request):
        return Response(MeSerializer(MeSerializer.for_user(request.user)).data)
