"""HTTP endpoints for the standard exports of a model version and a use case.

``GET /api/v1/model-versions/{id}/exports/{kind}/`` (model card, ML-BOM,
Annex IV HTML and PDF) and ``GET /api/v1/use-cases/{id}/exports/{kind}/``
(the transparency record, JSON and HTML). The object is found through the
tenancy querysets (another agency's private object: 404), then one service,
``governance.exports.services.export_create``, renders the document and
records it in the audit chain. The answer is the document itself, with a
``Content-Disposition`` file name and its SHA-256 in ``X-Content-SHA256``.
"""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from config.exceptions import ApiErrorSerializer
from governance.exports.responses import export_response
from governance.exports.services import (
    USE_CASE_FORMATS,
    VERSION_FORMATS,
    export_create,
)
from governance.models import UseCase
from registry.api.artifacts import IgnoreAcceptNegotiation
from registry.models import ModelVersion

MODEL_CARD_EXAMPLE = """---
license: apache-2.0
language:
- fr
datasets:
- arden-city/service-faq@1.0.0
base_model: arden-city/arden-base
base_model_relation: finetune
model-index:
- name: Arden assistant
  results:
  - task:
      type: text-generation
    dataset:
      name: small 1.0.0
      type: small
    metrics:
    - type: multiple_choice.acc
      value: 0.9
---

# Arden assistant 1.2.0
"""
ATRS_EXAMPLE = {
    "atrs_version": "4.0",
    "use_case_id": 12,
    "status": "approved",
    "tier_1": {
        "title": "Drafting replies to citizens",
        "organisation_name": "Arden City Council",
        "phase": "production",
        "website_url": "MISSING EVIDENCE",
    },
    "tier_2": {"owner_and_responsibility": {"team": "MISSING EVIDENCE"}},
    "missing_evidence": [
        "/tier_1/website_url",
        "/tier_2/owner_and_responsibility/team",
    ],
}
BOM_EXAMPLE = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.6",
    "components": [
        {
            "type": "machine-learning-model",
            "name": "Arden assistant",
            "version": "1.2.0",
            "hashes": [{"alg": "SHA-256", "content": "9f2c..."}],
            "licenses": [{"expression": "Apache-2.0"}],
            "modelCard": {"modelParameters": {"task": "text-generation"}},
        }
    ],
}


def _format_parameter(names: tuple[str, ...]) -> OpenApiParameter:
    return OpenApiParameter(
        "kind",
        str,
        OpenApiParameter.PATH,
        enum=list(names),
        description="The export to produce.",
    )


_DOCUMENT = OpenApiResponse(OpenApiTypes.STR, description="The exported document.")


class _ExportView(APIView):
    """Find the object among those the caller may read, export it, answer it."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = IgnoreAcceptNegotiation
    formats: tuple[str, ...] = ()
    target = ""  # export_create's keyword for the object

    def objects(self, user):
        raise NotImplementedError

    def export(self, request, pk: int, kind: str):
        if kind not in self.formats:
            raise Http404
        found = get_object_or_404(self.objects(request.user), pk=pk)
        return export_response(
            export_create(actor=request.user, format=kind, **{self.target: found})
        )


class ModelVersionExportView(_ExportView):
    """One standard export of a model version the caller may read."""

    formats = VERSION_FORMATS
    target = "version"

    def objects(self, user):
        return ModelVersion.objects.visible_to(user).select_related("model__agency")

    @extend_schema(
        operation_id="model_versions_export",
        summary="Export a model version: model card, ML-BOM, Annex IV (HTML, PDF)",
        description=(
            "`model-card`: Markdown with Hugging Face YAML front matter; "
            "`ml-bom`: CycloneDX 1.6 JSON; `annex-iv`: technical documentation "
            "after the EU AI Act's Annex IV as HTML; `annex-iv-pdf`: the same as "
            "PDF. Each export is recorded in the audit chain (`export.created`, "
            "with the format and the SHA-256 also sent in `X-Content-SHA256`). "
            "A version whose platform derivation failed has no bundle and is "
            "not exported (409 `derivation_failed`)."
        ),
        parameters=[_format_parameter(VERSION_FORMATS)],
        responses={
            (200, "text/markdown"): OpenApiResponse(
                OpenApiTypes.STR,
                description="The model card.",
                examples=[OpenApiExample("Model card", value=MODEL_CARD_EXAMPLE)],
            ),
            (200, "application/vnd.cyclonedx+json"): OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="The ML-BOM.",
                examples=[OpenApiExample("ML-BOM", value=BOM_EXAMPLE)],
            ),
            (200, "text/html"): _DOCUMENT,
            (200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY),
            (409, "application/json"): OpenApiResponse(
                ApiErrorSerializer, description="A derivation that failed."
            ),
        },
        tags=["exports"],
    )
    def get(self, request, pk: int, kind: str):
        return self.export(request, pk, kind)


class UseCaseExportView(_ExportView):
    """The transparency record of a use case the caller may read."""

    formats = USE_CASE_FORMATS
    target = "use_case"

    def objects(self, user):
        return UseCase.objects.visible_to(user).select_related(
            "agency", "model_version__model__agency"
        )

    @extend_schema(
        operation_id="use_cases_export",
        summary="Export a use case's algorithmic transparency record (UK ATRS)",
        description=(
            "`transparency-record`: JSON valid against "
            "governance/schemas/atrs.schema.json; `transparency-record-html`: "
            "the same as an HTML page. Blank fields read `MISSING EVIDENCE` and "
            "are listed in `missing_evidence`. Recorded in the audit chain."
        ),
        parameters=[_format_parameter(USE_CASE_FORMATS)],
        responses={
            (200, "application/json"): OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="The transparency record.",
                examples=[OpenApiExample("Transparency record", value=ATRS_EXAMPLE)],
            ),
            (200, "text/html"): _DOCUMENT,
        },
        tags=["exports"],
    )
    def get(self, request, pk: int, kind: str):
        return self.export(request, pk, kind)
