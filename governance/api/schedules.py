"""HTTP endpoints for evaluation schedules and their run history.

``/evaluation-schedules/``: the owning agency creates and edits its
schedules; oversight reads every agency's; other agencies get 404 (the
tenancy queryset, ``visible_to``). Each write validates its input, calls one
service of ``governance.services.schedules`` and answers with the read
serializer. ``/evaluation-schedules/{id}/ticks/`` is the run history: every
tick, the run it queued or why it queued none, and how the run compared
with the previous one.
"""

from __future__ import annotations

from django_filters import rest_framework as filters
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response

from config.filters import StrictOrderingFilter
from governance.api.examples import response
from governance.models import (
    EvaluationSchedule,
    EvaluationSuite,
    ScheduleOrigin,
    ScheduleTick,
)
from governance.services.schedules import schedule_create, schedule_update
from registry.api.serializers import ApiErrorSerializer, VisiblePrimaryKeyField
from registry.models import ModelVersion
from registry.services.changes import UNSET

ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="Invalid input"),
    403: OpenApiResponse(ApiErrorSerializer, description="Not allowed"),
    404: OpenApiResponse(ApiErrorSerializer, description="Not found or not visible"),
}

SCHEDULE = {
    "id": 7,
    "model_version": 31,
    "suite": 1,
    "suite_label": "civitas-core@1.0.0",
    "agency": "arden-city",
    "interval_seconds": None,
    "crontab": "30 2 * * 1",
    "is_enabled": True,
    "origin": "agency",
    "created_by": "alice",
    "created_at": "2026-03-02T09:00:00Z",
    "updated_at": "2026-03-02T09:00:00Z",
    "last_tick_at": "2026-03-09T02:30:00Z",
}
POLICY_SCHEDULE = {
    **SCHEDULE,
    "id": 8,
    "interval_seconds": 1296000,
    "crontab": "",
    "origin": "policy",
}
TICK = {
    "id": 41,
    "ticked_at": "2026-03-09T02:30:00Z",
    "outcome": "queued",
    "reason": "",
    "run": 118,
    "comparison": "within_tolerance",
    "baseline_run": 97,
    "compared_at": "2026-03-09T02:35:00Z",
    "detail": {
        "processor": {
            "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
            "cpu_signature": "GenuineIntel family 6 model 143 stepping 8",
            "isa_features": ["avx2", "avx512f", "avx512_vnni", "amx_int8"],
        },
        "baseline_processor": {
            "cpu_model": "AMD EPYC 7763 64-Core Processor",
            "cpu_signature": "AuthenticAMD family 25 model 1 stepping 1",
            "isa_features": ["avx2"],
        },
        "rtol": 1e-05,
        "same_isa_features": False,
        "differences": [],
        "regressions": [],
    },
}
SKIPPED_TICK = {
    **TICK,
    "id": 42,
    "outcome": "skipped_busy",
    "reason": "Run 118 of this schedule is still running.",
    "run": None,
    "comparison": "not_compared",
    "baseline_run": None,
    "compared_at": None,
    "detail": {},
}


class EvaluationScheduleFilter(filters.FilterSet):
    model_version = filters.NumberFilter(field_name="model_version")
    origin = filters.ChoiceFilter(choices=ScheduleOrigin.choices)

    class Meta:
        model = EvaluationSchedule
        fields = ["model_version", "origin", "is_enabled"]


class EvaluationScheduleSerializer(serializers.ModelSerializer):
    """A schedule as read: its version, suite, timing and state."""

    suite_label = serializers.CharField(source="suite.__str__", read_only=True)
    agency = serializers.CharField(
        source="model_version.model.agency.slug", read_only=True
    )
    created_by = serializers.StringRelatedField()

    class Meta:
        model = EvaluationSchedule
        fields = [
            "id", "model_version", "suite", "suite_label", "agency",
            "interval_seconds", "crontab", "is_enabled", "origin", "created_by",
            "created_at", "updated_at", "last_tick_at",
        ]  # fmt: skip
        read_only_fields = fields


class ScheduleTickSerializer(serializers.ModelSerializer):
    """One tick: the run it queued (or why none) and how the run compared."""

    class Meta:
        model = ScheduleTick
        fields = [
            "id", "ticked_at", "outcome", "reason", "run", "comparison",
            "baseline_run", "compared_at", "detail",
        ]  # fmt: skip
        read_only_fields = fields


class ScheduleTimingSerializer(serializers.Serializer):
    """Interval or crontab; the service checks that exactly one is given."""

    interval_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=60, max_value=366 * 86400
    )
    crontab = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=120,
        help_text="five cron fields (minute hour day-of-month month day-of-week), "
        "in the platform's time zone",
    )
    is_enabled = serializers.BooleanField(required=False)


class ScheduleCreateSerializer(ScheduleTimingSerializer):
    """Input of ``POST /evaluation-schedules/``."""

    model_version = VisiblePrimaryKeyField(model=ModelVersion)
    suite = VisiblePrimaryKeyField(model=EvaluationSuite)


@extend_schema_view(
    list=extend_schema(
        summary="Evaluation schedules the caller may see",
        examples=[
            response("Weekly, by the agency", SCHEDULE),
            response("Kept for a freshness limit", POLICY_SCHEDULE),
        ],
    ),
    retrieve=extend_schema(
        summary="One evaluation schedule",
        examples=[response("Weekly, by the agency", SCHEDULE)],
    ),
)
class EvaluationScheduleViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Evaluation schedules: the owning agency writes, oversight reads."""

    serializer_class = EvaluationScheduleSerializer
    filterset_class = EvaluationScheduleFilter
    ordering_fields = ["created_at", "last_tick_at", "id"]
    lookup_value_regex = r"\d+"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return EvaluationSchedule.objects.visible_to(self.request.user).select_related(
            "suite", "model_version__model__agency", "created_by"
        )

    def _fresh(self, schedule: EvaluationSchedule) -> dict:
        return EvaluationScheduleSerializer(
            self.get_queryset().get(pk=schedule.pk)
        ).data

    @extend_schema(
        summary="Schedule evaluations of a version on a suite (owning agency)",
        request=ScheduleCreateSerializer,
        responses={201: EvaluationScheduleSerializer, **ERRORS},
        examples=[
            OpenApiExample(
                "Mondays at 02:30",
                value={"model_version": 31, "suite": 1, "crontab": "30 2 * * 1"},
                request_only=True,
            ),
            OpenApiExample(
                "Every six hours",
                value={"model_version": 31, "suite": 1, "interval_seconds": 21600},
                request_only=True,
            ),
            response("Created", SCHEDULE, status=201),
        ],
    )
    def create(self, request):
        data = ScheduleCreateSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        schedule = schedule_create(
            actor=request.user,
            model_version=data.validated_data["model_version"],
            suite=data.validated_data["suite"],
            interval_seconds=data.validated_data.get("interval_seconds"),
            crontab=data.validated_data.get("crontab", ""),
            is_enabled=data.validated_data.get("is_enabled", True),
        )
        return Response(self._fresh(schedule), status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Re-time a schedule or switch it on or off (owning agency)",
        description="Giving interval_seconds clears the crontab and the reverse. "
        "A schedule kept for a policy's freshness limit is changed by the "
        "platform only (400 policy_schedule).",
        request=ScheduleTimingSerializer,
        responses={200: EvaluationScheduleSerializer, **ERRORS},
        examples=[
            OpenApiExample(
                "Switch off", value={"is_enabled": False}, request_only=True
            ),
            response("Updated", SCHEDULE),
        ],
    )
    def partial_update(self, request, pk=None):
        schedule = self.get_object()
        data = ScheduleTimingSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = {key: data.validated_data.get(key, UNSET) for key in data.fields}
        updated = schedule_update(actor=request.user, schedule=schedule, **changes)
        return Response(self._fresh(updated))

    @extend_schema(
        summary="The schedule's run history, newest first",
        responses={200: ScheduleTickSerializer(many=True)},
        examples=[
            response("Queued and compared", TICK),
            response("Skipped", SKIPPED_TICK),
        ],
    )
    @action(
        detail=True,
        methods=["get"],
        filterset_class=None,
        ordering_fields=["id", "ticked_at"],
    )
    def ticks(self, request, pk=None):
        # The schedule is found without the list's filters: the query string
        # (``ordering``) is the ticks', not the schedules'.
        schedule = get_object_or_404(self.get_queryset(), pk=pk)
        self.check_object_permissions(request, schedule)
        history = ScheduleTick.objects.filter(schedule=schedule).order_by(
            "-ticked_at", "-id"
        )
        history = StrictOrderingFilter().filter_queryset(request, history, self)
        page = self.paginate_queryset(history)
        return self.get_paginated_response(ScheduleTickSerializer(page, many=True).data)
