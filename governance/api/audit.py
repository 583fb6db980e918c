"""REST API of the audit chain under ``/api/v1/audit/``, and its routes.

The views read the chain through ``audit.services`` and filter it by what the
caller may see in the registry, so they live in governance, not in the
``audit`` leaf. ``urlpatterns`` (namespace ``audit``) is mounted under
``/api/v1/audit/``.

Reviewers and platform administrators (oversight) see every event, verify the
chain and export it whole; other users see their own agency's events and may
export one model version's events among those. The public key is public:
auditors need it to check what they were given.
"""

from __future__ import annotations

import json

from django import forms
from django.db.models import QuerySet
from django.http import Http404, StreamingHttpResponse
from django.urls import path
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, permissions, renderers, serializers, viewsets
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from audit import services as audit
from audit import signing
from audit.models import AuditCheckpoint, AuditEvent
from config.filters import ID_RANGE, StrictDjangoFilterBackend
from config.pagination import CursorPagination
from governance.api.examples import (
    AUDIT_CHECKPOINT,
    AUDIT_EVENT,
    AUDIT_EXPORT,
    AUDIT_PUBLIC_KEY,
    AUDIT_VERIFICATION,
    PUBLIC_KEY_PEM,
    response,
)
from registry.selectors import is_oversight, model_version_list, user_agency_ids

JSONL_MEDIA_TYPE = "application/x-ndjson"
PEM_MEDIA_TYPE = "application/x-pem-file"


def visible_events(user) -> QuerySet[AuditEvent]:
    """The audit events ``user`` may read: all for oversight, else own agency's."""
    events = AuditEvent.objects.all()
    if is_oversight(user):
        return events
    return events.filter(agency_id__in=user_agency_ids(user))


class IsOversight(permissions.BasePermission):
    """Reviewers and platform administrators only."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated) and is_oversight(
            request.user
        )


class JSONLinesRenderer(renderers.BaseRenderer):
    """JSON Lines: the export streams itself; errors are one JSON line."""

    media_type = JSONL_MEDIA_TYPE
    format = "jsonl"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")


class PEMRenderer(renderers.BaseRenderer):
    """A PEM document as text; anything else (an error) as JSON."""

    media_type = PEM_MEDIA_TYPE
    format = "pem"
    charset = "ascii"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if isinstance(data, str):
            return data.encode("ascii")
        return json.dumps(data).encode("utf-8")


# --- Events ------------------------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer):
    """One audit event as stored; ``payload`` parsed from its canonical JSON."""

    actor = serializers.IntegerField(source="actor_id", read_only=True, allow_null=True)
    agency = serializers.IntegerField(
        source="agency_id", read_only=True, allow_null=True
    )
    payload = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "created_at",
            "actor",
            "actor_label",
            "agency",
            "agency_slug",
            "action",
            "object_type",
            "object_id",
            "payload",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_payload(self, event: AuditEvent) -> dict:
        return event.payload_data


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(filters.NumberFilter):
    """An exact match on an integer id."""

    field_class = forms.IntegerField


class AuditEventFilter(filters.FilterSet):
    """Exact-match filters of the event list."""

    agency = filters.CharFilter(field_name="agency_slug", help_text="agency slug")
    actor = IdFilter(field_name="actor_id", help_text="user id")

    class Meta:
        model = AuditEvent
        fields = ["action", "object_type", "object_id"]


class AuditEventPagination(CursorPagination):
    """Newest first; the seq is gap-free and unique, a perfect cursor."""

    ordering = "-seq"


@extend_schema_view(
    list=extend_schema(examples=[response("Artifact uploaded", AUDIT_EVENT)]),
    retrieve=extend_schema(examples=[response("Artifact uploaded", AUDIT_EVENT)]),
)
class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Audit events visible to the caller (all for oversight, else own agency's)."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filter_backends = [StrictDjangoFilterBackend]
    filterset_class = AuditEventFilter
    pagination_class = AuditEventPagination
    lookup_field = "seq"
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AuditEvent.objects.none()
        return visible_events(self.request.user)


# --- Checkpoints ----------------------------------------------------------------


class AuditCheckpointSerializer(serializers.ModelSerializer):
    """A signed chain head; ``envelope`` is the DSSE envelope to keep."""

    envelope = serializers.JSONField(read_only=True)

    class Meta:
        model = AuditCheckpoint
        fields = ["seq", "head_hash", "created_at", "envelope"]
        read_only_fields = fields


class AuditCheckpointPagination(CursorPagination):
    """Newest first."""

    ordering = "-seq"


@extend_schema_view(
    list=extend_schema(examples=[response("Signed head", AUDIT_CHECKPOINT)])
)
class AuditCheckpointViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Signed checkpoints of the chain head, newest first.

    Auditors fetch and keep them: a checkpoint held outside the platform
    proves later that history before it was not rewritten.
    """

    queryset = AuditCheckpoint.objects.all()
    serializer_class = AuditCheckpointSerializer
    filter_backends: list = []
    pagination_class = AuditCheckpointPagination


# --- Verification, export, public key -------------------------------------------

_REPORT = inline_serializer(
    "AuditVerification",
    {
        "ok": serializers.BooleanField(),
        "events": serializers.IntegerField(),
        "first_bad_seq": serializers.IntegerField(allow_null=True),
        "reason": serializers.CharField(allow_null=True),
        "checkpoints_ok": serializers.BooleanField(),
    },
)
_PUBLIC_KEY = inline_serializer(
    "AuditPublicKey",
    {
        "algorithm": serializers.CharField(),
        "keyid": serializers.CharField(),
        "public_key_pem": serializers.CharField(),
    },
)


class AuditVerifyView(APIView):
    """Recompute the whole chain and check every signed checkpoint."""

    permission_classes = [IsOversight]

    @extend_schema(
        responses={200: _REPORT},
        examples=[response("Intact chain", AUDIT_VERIFICATION)],
    )
    def get(self, request):
        return Response(audit.verify_chain().summary())


class AuditExportView(APIView):
    """Stream the chain (or one model version's events) as JSON Lines."""

    permission_classes = [permissions.IsAuthenticated]
    renderer_classes = [renderers.JSONRenderer, JSONLinesRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "model_version",
                {"type": "integer", "minimum": ID_RANGE[0], "maximum": ID_RANGE[1]},
                description=(
                    "export only the events of this model version (a partial "
                    "export; without it the whole chain, for oversight only)"
                ),
            )
        ],
        responses={
            (200, JSONL_MEDIA_TYPE): OpenApiResponse(
                OpenApiTypes.STR,
                description="header, checkpoint, event and end lines (docs/audit.md)",
                examples=[
                    OpenApiExample("One model version's events", value=AUDIT_EXPORT)
                ],
            )
        },
    )
    def get(self, request):
        raw = request.query_params.get("model_version")
        oversight = is_oversight(request.user)
        if raw is None:
            if not oversight:
                self.permission_denied(
                    request, message="Only oversight may export the whole chain."
                )
            export = audit.export_open(actor=request.user, via="api")
        else:
            field = forms.IntegerField(min_value=ID_RANGE[0], max_value=ID_RANGE[1])
            try:
                version_id = field.clean(raw)
            except forms.ValidationError:
                raise serializers.ValidationError(
                    {"model_version": ["A model version id is a positive integer."]}
                ) from None
            # A version the caller cannot read answers 404 like a missing one,
            # before anything is recorded: no audit.exported, no up_to_seq.
            if not model_version_list(request.user).filter(pk=version_id).exists():
                raise Http404
            export = audit.export_open(
                actor=request.user,
                object_type=audit.MODEL_VERSION_TYPE,
                object_id=str(version_id),
                agency_ids=None if oversight else user_agency_ids(request.user),
                via="api",
            )
        response = StreamingHttpResponse(export.lines(), content_type=JSONL_MEDIA_TYPE)
        response["Content-Disposition"] = (
            f'attachment; filename="civitas-audit-{export.up_to_seq}.jsonl"'
        )
        return response


class AuditPublicKeyView(APIView):
    """The platform's Ed25519 public key: PEM by default, JSON on request."""

    permission_classes = [permissions.AllowAny]
    renderer_classes = [PEMRenderer, renderers.JSONRenderer]

    @extend_schema(
        responses={
            (200, PEM_MEDIA_TYPE): OpenApiResponse(
                OpenApiTypes.STR,
                examples=[OpenApiExample("Ed25519 key", value=PUBLIC_KEY_PEM)],
            ),
            (200, "application/json"): _PUBLIC_KEY,
        },
        examples=[response("Ed25519 key", AUDIT_PUBLIC_KEY)],
    )
    def get(self, request):
        pem = signing.public_key_pem()
        if request.accepted_renderer.format == "pem":
            return Response(pem)
        return Response(
            {
                "algorithm": "ed25519",
                "keyid": signing.platform_key_id(),
                "public_key_pem": pem,
            }
        )


# --- Routes --------------------------------------------------------------------------

app_name = "audit"

router = SimpleRouter()
router.register("events", AuditEventViewSet, basename="event")
router.register("checkpoints", AuditCheckpointViewSet, basename="checkpoint")

urlpatterns = [
    path("verify/", AuditVerifyView.as_view(), name="verify"),
    path("export/", AuditExportView.as_view(), name="export"),
    path("public-key/", AuditPublicKeyView.as_view(), name="public-key"),
    *router.urls,
]
