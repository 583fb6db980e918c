"""Derived versions: quantise or optimise an fp32 version, and read the trade.

``POST /model-versions/{id}/derive/`` registers the derived version (202,
pending) and queues the derivation (a quantisation, or ``optimised``: ONNX
Runtime's transformer fusions, kept only when verified); ``GET
/model-versions/{id}/derivation-evidence/`` compares a version with its
base version on their shared suites (``governance.quantisation``), for
quantised and optimised versions alike. ``/quantisation-evidence/``, its
first name, answers the same and stays for existing clients.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from engine.quantise import BLOCK_SIZES
from governance.api.examples import request, response
from governance.quantisation import quantisation_evidence
from governance.services.derivations import METHODS, model_version_derive
from registry.api.examples import MODEL_VERSION
from registry.api.serializers import ModelVersionSerializer, VisiblePrimaryKeyField
from registry.models import DatasetVersion, ModelVersion, semver_validator
from registry.selectors import is_visible_to, user_agency_id


class DeriveSerializer(serializers.Serializer):
    """Input of ``POST /model-versions/{id}/derive/``."""

    method = serializers.ChoiceField(
        choices=METHODS,
        help_text="dynamic-int8 (quantize_dynamic), static-int8 (QDQ calibrated "
        "on a dataset version), int4 (MatMulNBits, weight only) or optimised "
        "(ONNX Runtime's transformer optimiser: rotary, GELU and attention "
        "fusions where it recognises the graph, kept only if every "
        "log-likelihood matches the parent's within 1e-4 relative; a graph "
        "it does not recognise ends the version failed with failure_code "
        "not_fused, one whose fusion moves a log-likelihood with "
        "fusion_not_verified)",
    )
    version = serializers.CharField(max_length=64, validators=[semver_validator])
    calibration_dataset_version = VisiblePrimaryKeyField(
        model=DatasetVersion,
        required=False,
        allow_null=True,
        help_text="For static-int8: the dataset version whose texts calibrate it",
    )
    block_size = serializers.ChoiceField(
        choices=BLOCK_SIZES, required=False, allow_null=True, help_text="For int4"
    )


class QuantisationTaskSerializer(serializers.Serializer):
    task = serializers.CharField()
    perplexity_ratio = serializers.FloatField(required=False, allow_null=True)
    accuracy_delta = serializers.FloatField(required=False, allow_null=True)
    greedy_agreement = serializers.FloatField(required=False, allow_null=True)
    speed_ratio = serializers.FloatField(allow_null=True)
    memory_ratio = serializers.FloatField(allow_null=True)
    energy_ratio = serializers.FloatField(allow_null=True)


class QuantisationSuiteSerializer(serializers.Serializer):
    suite = serializers.CharField()
    run = serializers.IntegerField()
    parent_run = serializers.IntegerField()
    tasks = QuantisationTaskSerializer(many=True)


class QuantisationSummarySerializer(serializers.Serializer):
    max_perplexity_ratio = serializers.FloatField(allow_null=True)
    min_accuracy_delta = serializers.FloatField(allow_null=True)
    min_greedy_agreement = serializers.FloatField(allow_null=True)
    speed_ratio = serializers.FloatField(allow_null=True)
    memory_ratio = serializers.FloatField(allow_null=True)
    energy_ratio = serializers.FloatField(allow_null=True)


class QuantisationEvidenceSerializer(serializers.Serializer):
    """A version against its base version on their shared suites."""

    version = serializers.IntegerField()
    parent = serializers.IntegerField(allow_null=True)
    derivation = serializers.CharField(allow_blank=True)
    derivation_settings = serializers.DictField()
    suites = QuantisationSuiteSerializer(many=True)
    summary = QuantisationSummarySerializer()


DERIVED_SETTINGS = {
    "method": "dynamic-int8",
    "weight_type": "QInt8",
    "per_channel": False,
    "reduce_range": True,
    "parent_sha256": MODEL_VERSION["artifact_digest"],
    "tool": "onnxruntime.quantization",
}
DERIVED_VERSION = {
    **MODEL_VERSION,
    "id": 32,
    "version": "1.0.1-int8",
    "base_version": {
        "id": 31,
        "model": 7,
        "model_slug": "arden-requests-assistant",
        "agency": "arden-city",
        "version": "1.0.0",
    },
    "derivation": "quantised",
    "derivation_settings": DERIVED_SETTINGS,
    "datasets": [],
    "artifact_state": "pending",
    "artifact_digest": "",
    "artifact_size": None,
    "artifact_format": "",
    "is_released": False,
    "released_at": None,
}
OPTIMISED_VERSION = {
    **DERIVED_VERSION,
    "id": 33,
    "version": "1.0.4",
    "derivation": "optimised",
    "derivation_settings": {
        "method": "optimised",
        "opt_level": 0,
        "tolerance": 0.0001,
        "parent_sha256": MODEL_VERSION["artifact_digest"],
        "tool": "engine.attention+engine.packing+onnxruntime.transformers.optimizer",
    },
}
EVIDENCE = {
    "version": 32,
    "parent": 31,
    "derivation": "quantised",
    "derivation_settings": DERIVED_SETTINGS,
    "suites": [
        {
            "suite": "civitas-core@1.0.0",
            "run": 131,
            "parent_run": 118,
            "tasks": [
                {
                    "task": "public-services-perplexity",
                    "perplexity_ratio": 1.004,
                    "speed_ratio": 2.7,
                    "memory_ratio": 0.41,
                    "energy_ratio": 0.38,
                },
                {
                    "task": "public-services-mc",
                    "accuracy_delta": -0.01,
                    "speed_ratio": 2.9,
                    "memory_ratio": 0.41,
                    "energy_ratio": 0.36,
                },
            ],
        }
    ],
    "summary": {
        "max_perplexity_ratio": 1.004,
        "min_accuracy_delta": -0.01,
        "min_greedy_agreement": None,
        "speed_ratio": 2.8,
        "memory_ratio": 0.41,
        "energy_ratio": 0.37,
    },
}


OPTIMISED_EVIDENCE = {
    "version": 33,
    "parent": 31,
    "derivation": "optimised",
    "derivation_settings": {
        **OPTIMISED_VERSION["derivation_settings"],
        "model_type": "bert",
        "fused_ops": {"RotaryEmbedding": 4},
        "packing": {
            "status": "packed",
            "qkv": 0,
            "siblings": 8,
            "matmuls_before": 33,
            "matmuls_after": 25,
        },
        "max_relative_diff": 2.1e-07,
        "verified_sequences": 5,
    },
    "suites": [
        {
            "suite": "civitas-core@1.0.0",
            "run": 140,
            "parent_run": 118,
            "tasks": [
                {
                    "task": "public-services-perplexity",
                    "perplexity_ratio": 1.0,
                    "speed_ratio": 1.12,
                    "memory_ratio": 0.98,
                    "energy_ratio": 0.9,
                }
            ],
        }
    ],
    "summary": {
        "max_perplexity_ratio": 1.0,
        "min_accuracy_delta": None,
        "min_greedy_agreement": None,
        "speed_ratio": 1.12,
        "memory_ratio": 0.98,
        "energy_ratio": 0.9,
    },
}
EVIDENCE_EXAMPLES = [
    response("Dynamic int8 against fp32", EVIDENCE),
    response("Optimised (fused graph) against fp32", OPTIMISED_EVIDENCE),
]


class ModelVersionDeriveView(APIView):
    """Derive a quantised or optimised version from an agency's fp32 version."""

    @extend_schema(
        request=DeriveSerializer,
        responses={202: ModelVersionSerializer},
        examples=[
            request("Dynamic int8", {"method": "dynamic-int8", "version": "1.0.1"}),
            request(
                "Static int8",
                {
                    "method": "static-int8",
                    "version": "1.0.2",
                    "calibration_dataset_version": 12,
                },
            ),
            request("Int4", {"method": "int4", "version": "1.0.3", "block_size": 32}),
            request("Optimised", {"method": "optimised", "version": "1.0.4"}),
            response("Pending", DERIVED_VERSION, status=202),
            response("Optimised, pending", OPTIMISED_VERSION, status=202),
        ],
    )
    def post(self, request, pk: int):
        # Only the owning agency derives: another agency's version, public or
        # not, is not found here.
        parent = get_object_or_404(
            ModelVersion.objects.visible_to(request.user).select_related(
                "model", "licence"
            ),
            pk=pk,
            model__agency_id=user_agency_id(request.user),
        )
        data = DeriveSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        derived = model_version_derive(
            actor=request.user,
            parent=parent,
            method=data.validated_data["method"],
            version=data.validated_data["version"],
            calibration=data.validated_data.get("calibration_dataset_version"),
            block_size=data.validated_data.get("block_size"),
        )
        return Response(
            ModelVersionSerializer(derived, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class ModelVersionQuantisationEvidenceView(APIView):
    """Quality deltas and cost ratios of a version against its base version.

    The first name of ``/derivation-evidence/``, kept for existing clients.
    """

    @extend_schema(
        responses={200: QuantisationEvidenceSerializer},
        examples=EVIDENCE_EXAMPLES,
        description="The same answer as /derivation-evidence/, its neutral name: "
        "quantised and optimised versions alike.",
    )
    def get(self, request, pk: int):
        version = get_object_or_404(
            ModelVersion.objects.visible_to(request.user).select_related(
                "base_version__model"
            ),
            pk=pk,
        )
        base = version.base_version
        if base is not None and not is_visible_to(
            request.user,
            agency_id=base.model.agency_id,
            visibility=base.model.visibility,
        ):
            # A base the reader may not see is not compared (nor named).
            version.base_version = None
        return Response(quantisation_evidence(version))


class ModelVersionDerivationEvidenceView(ModelVersionQuantisationEvidenceView):
    """The trade of a quantised or optimised version against its base version."""

    @extend_schema(
        responses={200: QuantisationEvidenceSerializer},
        examples=EVIDENCE_EXAMPLES,
        description="For every suite both the version and its direct base "
        "version have a succeeded run on: quality deltas (perplexity ratio, "
        "accuracy delta, greedy agreement on refusal prompts) beside speed, "
        "memory and energy ratios. Quantised and optimised versions alike.",
    )
    def get(self, request, pk: int):
        return super().get(request, pk)
