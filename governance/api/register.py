"""The public transparency register as JSON: ``GET /api/v1/register/``.

Open to anyone, without an account (``AllowAny``; the anonymous throttle
counts requests per client address). The records are the ones the portal's
register pages and ``/register.csv`` show, built by
``governance.register.register_entries``; the query parameters are the
portal's search and filters.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, serializers
from rest_framework.exceptions import ErrorDetail, ValidationError

from config.pagination import CursorPagination
from governance.models import RiskTier
from governance.register import (
    REGISTER_STATUSES,
    RegisterQueryForm,
    register_entries,
    register_use_cases,
)
from registry.api.examples import AT, DIGEST, response
from registry.models import DatasetRole, PersonalData

REGISTER_ENTRY = {
    "id": 12,
    "title": "Drafting replies to residents",
    "purpose": "Draft a first reply to residents' written questions about "
    "council services; staff check and send every reply.",
    "public_service": "Contact centre, Arden City Council",
    "affected_people": "Residents who write to the council",
    "decision_informed": "None: staff write and sign every reply.",
    "human_oversight": "A contact-centre officer reads and edits every draft.",
    "valid_until": "2027-03-01",
    "status": "approved",
    "risk_tier": "limited",
    "agency": {"slug": "arden-city", "name": "Arden City Council"},
    "model": {
        "name": "Arden Small LM",
        "slug": "arden-small-lm",
        "version_id": 31,
        "version": "1.0.0",
        "artifact_sha256": DIGEST,
        "licence": "Apache-2.0",
    },
    "uses_personal_data": False,
    "datasets": [
        {
            "name": "Public-services explanations",
            "version": "1.0.0",
            "role": "training",
            "licence": "CC-BY-4.0",
            "personal_data": "none",
            "is_public": True,
        },
        {
            "name": None,
            "version": None,
            "role": "evaluation",
            "licence": "CC-BY-4.0",
            "personal_data": "none",
            "is_public": False,
        },
    ],
    "evaluations": [
        {
            "run_id": 118,
            "suite": "civitas-core",
            "suite_version": "1.0.0",
            "finished_at": AT,
            "artifact_sha256": DIGEST,
            "metrics": [
                {"task": "multiple_choice", "name": "acc", "value": 0.82},
                {"task": "perplexity", "name": "perplexity", "value": 41.7},
            ],
        }
    ],
    "decision": {
        "id": 7,
        "kind": "approve",
        "decided_at": "2026-03-09T14:05:00Z",
        "rationale": "The evidence is complete and the oversight is adequate.",
        "approved_at": "2026-03-09T14:05:00Z",
        "expires_at": "2027-03-02T00:00:00Z",
        "audit_event_seq": 412,
    },
    "checkpoint": {
        "seq": 500,
        "head_hash": "5d41402abc4b2a76b9719d911017c592" * 2,
        "signed_at": "2026-03-09T15:00:00Z",
        "key_id": "b1946ac92492d234",
    },
}


class _AgencySerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()


class _ModelSerializer(serializers.Serializer):
    name = serializers.CharField()
    slug = serializers.CharField()
    version_id = serializers.IntegerField()
    version = serializers.CharField()
    artifact_sha256 = serializers.CharField()
    licence = serializers.CharField()


class _DatasetSerializer(serializers.Serializer):
    name = serializers.CharField(
        allow_null=True, help_text="null for a dataset its agency keeps private"
    )
    version = serializers.CharField(allow_null=True)
    role = serializers.ChoiceField(choices=DatasetRole.choices)
    licence = serializers.CharField()
    personal_data = serializers.ChoiceField(choices=PersonalData.choices)
    is_public = serializers.BooleanField()


class _MetricSerializer(serializers.Serializer):
    task = serializers.CharField()
    name = serializers.CharField()
    value = serializers.FloatField()


class _EvaluationSerializer(serializers.Serializer):
    run_id = serializers.IntegerField()
    suite = serializers.CharField()
    suite_version = serializers.CharField()
    finished_at = serializers.DateTimeField(allow_null=True)
    artifact_sha256 = serializers.CharField()
    metrics = _MetricSerializer(many=True)


class _DecisionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    decided_at = serializers.DateTimeField()
    rationale = serializers.CharField()
    approved_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    audit_event_seq = serializers.IntegerField(
        allow_null=True, help_text="the decision's event in the audit chain"
    )


class _CheckpointSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    head_hash = serializers.CharField()
    signed_at = serializers.DateTimeField()
    key_id = serializers.CharField()


class RegisterEntrySerializer(serializers.Serializer):
    """One register entry (``RegisterEntry.as_record``), read-only."""

    id = serializers.IntegerField()
    title = serializers.CharField()
    purpose = serializers.CharField()
    public_service = serializers.CharField()
    affected_people = serializers.CharField(allow_blank=True)
    decision_informed = serializers.CharField(allow_blank=True)
    human_oversight = serializers.CharField(allow_blank=True)
    valid_until = serializers.DateField()
    status = serializers.CharField(help_text="approved, suspended or retired")
    risk_tier = serializers.CharField(
        help_text="minimal, limited, high (prohibited is never approved)"
    )
    agency = _AgencySerializer()
    model = _ModelSerializer()
    uses_personal_data = serializers.BooleanField()
    datasets = _DatasetSerializer(many=True)
    evaluations = _EvaluationSerializer(many=True)
    decision = _DecisionSerializer(allow_null=True)
    checkpoint = _CheckpointSerializer(
        allow_null=True,
        help_text="the first signed audit checkpoint covering the decision's "
        "event; null until one is signed",
    )


class RegisterPagination(CursorPagination):
    """Newest entries first, as the portal lists them."""

    ordering = "-id"


def _parameters() -> list[OpenApiParameter]:
    return [
        OpenApiParameter(
            "q",
            {"type": "string", "maxLength": 200},
            description="words of the title, purpose, "
            "service, agency or model; every word must match",
        ),
        OpenApiParameter(
            "agency",
            {"type": "string", "maxLength": 80, "pattern": "^[-a-zA-Z0-9_]+$"},
            description="agency slug",
        ),
        OpenApiParameter("risk_tier", OpenApiTypes.STR, enum=RiskTier.values),
        OpenApiParameter("status", OpenApiTypes.STR, enum=list(REGISTER_STATUSES)),
        OpenApiParameter(
            "personal_data",
            OpenApiTypes.STR,
            enum=["yes", "no"],
            description="whether a dataset of the model holds personal data",
        ),
    ]


class RegisterView(generics.ListAPIView):
    """The public transparency register: every use case in (or out of) service."""

    permission_classes = [permissions.AllowAny]
    serializer_class = RegisterEntrySerializer
    pagination_class = RegisterPagination
    filter_backends: list = []

    def get_queryset(self):
        form = RegisterQueryForm(self.request.query_params)
        if not form.is_valid():
            raise ValidationError(
                {
                    name: [
                        ErrorDetail(" ".join(error.messages), code=error.code)
                        for error in errors
                    ]
                    for name, errors in form.errors.as_data().items()
                }
            )
        return register_use_cases(form.cleaned_data)

    @extend_schema(
        summary="The public transparency register",
        description=(
            "Every approved, suspended or retired use case with its agency, "
            "purpose, risk tier, model version, datasets, latest evaluation "
            "results, decision and the signed audit checkpoint covering it. "
            "No account needed. The same records as `/register.csv` and the "
            "portal's register pages."
        ),
        parameters=_parameters(),
        examples=[response("An approved use case", [REGISTER_ENTRY])],
        auth=[],
        tags=["register"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        # The records are plain values already (``RegisterEntry.as_record``);
        # ``RegisterEntrySerializer`` documents their shape in the schema.
        return self.get_paginated_response(
            [entry.as_record() for entry in register_entries(page)]
        )
