"""HTTP endpoints of resumable uploads (S3 multipart shape), see docs/artifacts.md.

``POST .../uploads/`` opens a session; ``PUT .../uploads/<id>/parts/<n>/``
sends part ``n`` as the raw body with its SHA-256 in ``Content-Digest``
(RFC 9530) or ``X-Part-SHA256``; ``GET .../uploads/<id>/`` lists the parts
received (to resume); ``POST .../uploads/<id>/complete/`` checks and stores
the bundle; ``DELETE .../uploads/<id>/`` aborts. Every route finds the version
among those the caller's agency may edit (404 otherwise), and the session
under that version.
"""

from __future__ import annotations

import base64
import binascii
import re

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from config.exceptions import DomainError
from registry.api.artifacts import (
    _COMMON_ERRORS,
    _REFUSED,
    _TOO_LARGE,
    ModelVersionArtifactSerializer,
    _problem,
)
from registry.api.examples import ARTIFACT
from registry.models import ModelVersion, UploadPart, UploadSession
from registry.services import uploads
from registry.staging import body_blocks

_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_SESSION_ID = "3f2b8c1e-6d4a-4b7e-9a51-0c2d8e7f4a10"
_DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


class UploadPartSerializer(serializers.ModelSerializer):
    """A received part: its number, length and SHA-256."""

    class Meta:
        model = UploadPart
        fields = ["number", "size", "sha256", "received_at"]
        read_only_fields = fields


class UploadSessionSerializer(serializers.ModelSerializer):
    """A resumable upload: its layout, state, expiry and the parts received."""

    parts = UploadPartSerializer(many=True, read_only=True)

    class Meta:
        model = UploadSession
        fields = [
            "id", "version", "size", "part_size", "part_count",
            "original_filename", "expected_sha256", "state", "error",
            "created_at", "expires_at", "parts",
        ]  # fmt: skip
        read_only_fields = fields


class UploadSessionCreateSerializer(serializers.Serializer):
    """What the client announces: total size, part size, name, optional digest."""

    size = serializers.IntegerField(min_value=1)
    part_size = serializers.IntegerField(min_value=1)
    filename = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, default=""
    )
    sha256 = serializers.RegexField(
        r"^[0-9a-fA-F]{64}$", required=False, allow_blank=True, default=""
    )


_SESSION_EXAMPLE = {
    "id": _SESSION_ID, "version": 42, "size": 1073741824, "part_size": 16777216,
    "part_count": 64, "original_filename": "city-assistant.zip",
    "expected_sha256": "", "state": "open", "error": "",
    "created_at": "2026-12-04T16:00:00Z", "expires_at": "2026-12-05T16:00:00Z",
    "parts": [{"number": 1, "size": 16777216, "sha256": _DIGEST,
               "received_at": "2026-12-04T16:00:02Z"}],
}  # fmt: skip
_SESSION_EXAMPLES = [
    OpenApiExample(
        "Open, one part received", value=_SESSION_EXAMPLE, response_only=True
    )
]
_CLOSED = _problem(
    "The upload is no longer open (upload_not_open, upload_expired), or the "
    "version already has an artifact (artifact_exists, artifact_pending).",
    OpenApiExample(
        "Completed twice",
        value={
            "code": "upload_not_open",
            "message": "This upload is completed; it takes no more parts.",
        },
        status_codes=["409"],
    ),
)


def _editable_version(request, pk: int) -> ModelVersion:
    return get_object_or_404(
        ModelVersion.objects.editable_by(request.user).select_related("model__agency"),
        pk=pk,
    )


def _session(request, pk: int, upload_id) -> UploadSession:
    version = _editable_version(request, pk)
    return get_object_or_404(
        UploadSession.objects.select_related("version__model__agency"),
        pk=upload_id,
        version=version,
    )


class UploadSessionListView(APIView):
    """Open a resumable upload of a model version's bundle."""

    parser_classes = [JSONParser]
    throttle_scope = "upload"

    def get_throttles(self):
        """The default throttles, plus the ``upload`` scope."""
        return [*super().get_throttles(), ScopedRateThrottle()]

    @extend_schema(
        operation_id="model_versions_uploads_create",
        summary="Open a resumable (multi-part) upload of the ONNX bundle",
        description=(
            "Announce the bundle's `size` and the `part_size`; part *n* (from 1) "
            "then covers bytes `[(n-1)*part_size, min(n*part_size, size))`. Parts "
            "are sent with `PUT .../parts/{n}/`, in any order and in parallel; "
            "the session expires after CIVITAS_UPLOAD_SESSION_HOURS."
        ),
        request=UploadSessionCreateSerializer,
        responses={
            201: UploadSessionSerializer,
            400: _problem("part_size_invalid, too_many_parts or invalid fields."),
            409: _CLOSED,
            413: _TOO_LARGE,
            **_COMMON_ERRORS,
        },
        examples=[
            OpenApiExample(
                "One GiB in 16 MiB parts",
                value={
                    "size": 1073741824,
                    "part_size": 16777216,
                    "filename": "city-assistant.zip",
                },
                request_only=True,
            ),
            OpenApiExample(
                "Opened",
                value={**_SESSION_EXAMPLE, "parts": []},
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def post(self, request, pk: int):
        version = _editable_version(request, pk)
        data = UploadSessionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        session = uploads.upload_session_create(
            actor=request.user, version=version, **data.validated_data
        )
        return Response(
            UploadSessionSerializer(session).data, status=status.HTTP_201_CREATED
        )


class UploadSessionDetailView(APIView):
    """Read an upload's received parts (to resume), or abort it."""

    @extend_schema(
        operation_id="model_versions_uploads_retrieve",
        summary="State and received parts of a resumable upload",
        responses={200: UploadSessionSerializer, **_COMMON_ERRORS},
        examples=_SESSION_EXAMPLES,
    )
    def get(self, request, pk: int, upload_id):
        session = _session(request, pk, upload_id)
        return Response(UploadSessionSerializer(session).data)

    @extend_schema(
        operation_id="model_versions_uploads_abort",
        summary="Abort a resumable upload and drop its data",
        responses={204: None, 409: _CLOSED, **_COMMON_ERRORS},
    )
    def delete(self, request, pk: int, upload_id):
        session = _session(request, pk, upload_id)
        uploads.upload_session_abort(actor=request.user, session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _claimed_sha256(meta) -> str:
    """The part's SHA-256 from ``Content-Digest: sha-256=:b64:`` or X-Part-SHA256."""
    direct = meta.get("HTTP_X_PART_SHA256", "").strip()
    if _HEX.match(direct):
        return direct.lower()
    for item in meta.get("HTTP_CONTENT_DIGEST", "").split(","):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() == "sha-256" and value.startswith(":"):
            try:
                raw = base64.b64decode(value.strip(":"), validate=True)
            except (binascii.Error, ValueError):
                break
            if len(raw) == 32:
                return raw.hex()
    raise DomainError(
        "Send the part's SHA-256 as `Content-Digest: sha-256=:<base64>:` "
        "(RFC 9530) or `X-Part-SHA256: <hex>`.",
        code="part_digest_missing",
        fields={"Content-Digest": ["Required."]},
    )


def _content_length(meta) -> int:
    try:
        length = int(meta.get("CONTENT_LENGTH") or "")
    except ValueError:
        length = -1
    if length < 0:
        raise DomainError(
            "Send the part with a Content-Length header.", code="length_required"
        )
    return length


_PART_DIGEST_HEADER = OpenApiParameter(
    "Content-Digest",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="The part's SHA-256 (RFC 9530): `sha-256=:<base64>:`. "
    "`X-Part-SHA256: <hex>` is accepted instead.",
)


class UploadPartView(APIView):
    """Send one part of a resumable upload as the raw body."""

    # The body is read by the view itself, in large blocks; never parsed.
    parser_classes: list = []

    @extend_schema(
        operation_id="model_versions_uploads_part",
        summary="Upload part n (raw body, exact length, SHA-256 checked)",
        description=(
            "The body is part *n*, exactly its length. It is written at its "
            "offset and hashed on the way; a part whose SHA-256 differs from "
            "the claim is refused with `part_digest_mismatch` and must be sent "
            "again. Sending a received part again is harmless."
        ),
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[_PART_DIGEST_HEADER],
        responses={
            200: UploadPartSerializer,
            400: _problem(
                "part_digest_mismatch, part_digest_missing, part_number_invalid, "
                "part_size_mismatch, incomplete_body.",
                OpenApiExample(
                    "Wrong hash",
                    value={
                        "code": "part_digest_mismatch",
                        "message": f"Part 3 has SHA-256 {_DIGEST}, not the "
                        f"{'0' * 64} claimed; send it again.",
                    },
                    status_codes=["400"],
                ),
            ),
            409: _CLOSED,
            413: _TOO_LARGE,
            **_COMMON_ERRORS,
        },
        examples=[
            OpenApiExample(
                "Received",
                value={
                    "number": 3,
                    "size": 16777216,
                    "sha256": _DIGEST,
                    "received_at": "2026-12-04T16:00:02Z",
                },
                response_only=True,
            ),
        ],
    )
    def put(self, request, pk: int, upload_id, number: int):
        session = _session(request, pk, upload_id)
        length = _content_length(request.META)
        sha256 = _claimed_sha256(request.META)
        uploads.upload_part_check(session=session, number=number, length=length)
        part = uploads.upload_part_receive(
            session=session, number=number, length=length, sha256=sha256,
            blocks=body_blocks(request._request, length=length),
        )  # fmt: skip
        return Response(UploadPartSerializer(part).data)


class UploadCompleteView(APIView):
    """Assemble, check and store a resumable upload."""

    @extend_schema(
        operation_id="model_versions_uploads_complete",
        summary="Complete a resumable upload: check and store the bundle",
        description=(
            "Every part must have been received. The bundle's SHA-256 is "
            "computed once, then it goes through the same checks as a "
            "single-request upload (`PUT .../artifact/`): 202 with "
            "`artifact_state` `pending`, or a refusal that fails the session."
        ),
        request=None,
        responses={
            202: ModelVersionArtifactSerializer,
            400: _REFUSED,
            409: _CLOSED,
            **_COMMON_ERRORS,
        },
        examples=[
            OpenApiExample(
                "Stored, self-test pending",
                value={**ARTIFACT, "artifact_state": "pending", "released_at": None},
                response_only=True,
                status_codes=["202"],
            )
        ],
    )
    def post(self, request, pk: int, upload_id):
        session = _session(request, pk, upload_id)
        version = uploads.upload_session_complete(actor=request.user, session=session)
        return Response(
            ModelVersionArtifactSerializer(version).data,
            status=status.HTTP_202_ACCEPTED,
        )
