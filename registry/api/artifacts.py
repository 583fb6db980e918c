"""HTTP endpoints for artifacts: upload, register by reference, download.

Views stay thin: find the object through the tenancy querysets (404 for
anything the caller may not see or edit), refuse early what the state already
forbids (409 before a byte of the body is read), then call one service of
``registry.services.artifacts``. Upload bodies are streamed by
``registry.storage.DigestingUploadHandler``, installed before DRF parses.
"""

from __future__ import annotations

import base64

from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from config.throttling import ScopedRateThrottle
from registry.api.examples import ARTIFACT, DATASET_FILE, response
from registry.models import DatasetVersion, ModelKind, ModelVersion
from registry.services import artifacts, downloads
from registry.storage import (
    CHUNK_SIZE,
    RawUploadParser,
    SingleFileMultiPartParser,
    install_upload_handler,
    received_upload,
    remove_spooled,
)

_UPLOAD_METHODS = ("PUT", "POST")


class ModelVersionArtifactSerializer(serializers.ModelSerializer):
    """A model version's artifact: its state, digest and the facts read from it."""

    # Blank until the artifact has been inspected, as the schema says.
    kind = serializers.ChoiceField(
        choices=ModelKind.choices, allow_blank=True, read_only=True
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id", "artifact_state", "artifact_error", "artifact_digest",
            "artifact_size", "artifact_format", "original_filename", "source_uri",
            "graph_inputs", "graph_outputs", "opsets", "parameter_count",
            "weight_bytes", "kind", "layout", "num_layers", "quantisation",
            "selftest", "released_at",
        ]  # fmt: skip
        read_only_fields = fields


class DatasetVersionFileSerializer(serializers.ModelSerializer):
    """A dataset version's data file: state, digest, size, the uploaded name."""

    class Meta:
        model = DatasetVersion
        fields = [
            "id", "artifact_state", "artifact_error", "digest", "size_bytes",
            "original_filename", "source_uri",
        ]  # fmt: skip
        read_only_fields = fields


class ArtifactReferenceSerializer(serializers.Serializer):
    """Where the worker reads the artifact from, and the digest it must have."""

    uri = serializers.CharField(
        max_length=1000,
        help_text="file:///path inside CIVITAS_REFERENCE_ROOTS, or s3://bucket/key "
        "when an S3 endpoint is configured.",
    )
    sha256 = serializers.RegexField(
        r"^[0-9a-fA-F]{64}$", help_text="The expected SHA-256 of the file, in hex."
    )


class ArtifactUploadFormSerializer(serializers.Serializer):
    """A multipart upload: exactly one part, named ``file``."""

    file = serializers.FileField()


class ArtifactProblemSerializer(serializers.Serializer):
    """The API's error body."""

    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(required=False)


def _problem(description: str, *examples: OpenApiExample) -> OpenApiResponse:
    return OpenApiResponse(
        ArtifactProblemSerializer, description=description, examples=list(examples)
    )


_UPLOAD_BODY = {
    "application/octet-stream": OpenApiTypes.BINARY,
    "multipart/form-data": ArtifactUploadFormSerializer,
}
_FILENAME_HEADER = OpenApiParameter(
    "Content-Disposition",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="For a raw body: `attachment; filename=model.zip`. The name is "
    "kept as metadata only; the storage key is made by the server.",
)
_COMMON_ERRORS = {
    401: _problem("No or invalid credentials."),
    404: _problem("No such object, or not one the caller may see or edit."),
    429: _problem("Too many uploads (throttle scope `upload`)."),
}
_REFUSED = _problem(
    "The upload was refused; nothing was stored. `code` is the bundle check "
    "that failed (unsafe_path, link_member, special_member, compression_ratio, "
    "too_many_files, too_large, not_an_archive, invalid_onnx, op_not_allowed, "
    "external_data_outside, tensor_too_large, missing_model, "
    "missing_tokenizer, unsupported_model...) or a request problem "
    "(missing_file, too_many_parts, empty_upload, incomplete_body).",
    OpenApiExample(
        "Archive with a path traversal",
        value={
            "code": "unsafe_path",
            "message": "Archive member '../x' contains a '..' component; use plain "
            "relative names such as 'bundle/model.onnx'.",
        },
        status_codes=["400"],
    ),
    OpenApiExample(
        "Not an ONNX model",
        value={
            "code": "invalid_onnx",
            "message": "Not an ONNX protobuf: the upload looks like a Python "
            "pickle. Export the model with torch.onnx or Optimum and upload "
            "model.onnx.",
        },
        status_codes=["400"],
    ),
)
_TOO_LARGE = _problem(
    "The body is larger than CIVITAS_UPLOAD_MAX_BYTES; the partial file was removed.",
    OpenApiExample(
        "Over the cap",
        value={
            "code": "payload_too_large",
            "message": "The upload is larger than the limit of 8589934592 bytes "
            "(CIVITAS_UPLOAD_MAX_BYTES).",
        },
        status_codes=["413"],
    ),
)


class IgnoreAcceptNegotiation(DefaultContentNegotiation):
    """Always answer with the view's first renderer, whatever ``Accept`` asks.

    A download is a file, not a rendered representation; its errors are JSON.
    Without this a client sending ``Accept: application/octet-stream`` would
    get 406 before the file is even looked up.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        """The first renderer, unconditionally."""
        return renderers[0], renderers[0].media_type


class _ArtifactFileResponse(FileResponse):
    # FileResponse reads 4 KiB at a time by default; artifacts are GiBs.
    block_size = CHUNK_SIZE


def _file_response(download: downloads.ArtifactDownload) -> FileResponse:
    response = _ArtifactFileResponse(
        download.file,
        as_attachment=True,
        filename=download.filename,
        content_type=download.content_type,
    )
    response["Content-Length"] = str(download.size)
    digest = base64.b64encode(bytes.fromhex(download.sha256)).decode("ascii")
    response["Digest"] = f"sha-256={digest}"
    response["X-Content-SHA256"] = download.sha256
    response["Cache-Control"] = "private, no-cache"
    return response


class _UploadView(APIView):
    """Streams PUT/POST bodies through the digesting upload handler, throttled."""

    parser_classes = [RawUploadParser, SingleFileMultiPartParser]
    throttle_scope = "upload"

    def initialize_request(self, request, *args, **kwargs):
        """Install the upload handler before anything can parse the body."""
        if request.method in _UPLOAD_METHODS:
            install_upload_handler(request)
        return super().initialize_request(request, *args, **kwargs)

    def get_throttles(self):
        """The default throttles, plus the ``upload`` scope for uploads."""
        throttles = super().get_throttles()
        if self.request.method in _UPLOAD_METHODS:
            throttles.append(ScopedRateThrottle())
        return throttles


_MODEL_UPLOAD_DOC = dict(
    request=_UPLOAD_BODY,
    parameters=[_FILENAME_HEADER],
    responses={
        202: ModelVersionArtifactSerializer,
        400: _REFUSED,
        409: _problem("The version already has an artifact (or one is pending)."),
        411: _problem("No Content-Length (chunked bodies are not accepted)."),
        413: _TOO_LARGE,
        415: _problem("Content-Type is neither application/octet-stream nor "
                      "multipart/form-data."),
        **_COMMON_ERRORS,
    },
    examples=[
        OpenApiExample(
            "Stored, self-test pending",
            value={
                "id": 42, "artifact_state": "pending", "artifact_error": "",
                "artifact_digest": "9f86d081884c7d659a2feaa0c55ad015"
                                   "a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "artifact_size": 18432, "artifact_format": "zip",
                "original_filename": "city-assistant.zip", "source_uri": "",
                "graph_inputs": [{"name": "input_ids", "dtype": "int64",
                                  "shape": ["batch", "sequence"]}],
                "graph_outputs": [{"name": "logits", "dtype": "float32",
                                   "shape": ["batch", "sequence", 512]}],
                "opsets": {"ai.onnx": 18}, "parameter_count": 180000,
                "weight_bytes": 720000, "kind": "causal_lm_kv",
                "layout": "optimum", "num_layers": 2, "quantisation": "fp32",
                "released_at": None,
            },
            response_only=True,
            status_codes=["202"],
        ),
    ],
)  # fmt: skip


class ModelVersionArtifactView(_UploadView):
    """A model version's ONNX bundle: read its state, or upload it once."""

    @extend_schema(
        operation_id="model_versions_artifact_retrieve",
        summary="Artifact state and graph facts of a model version",
        responses={200: ModelVersionArtifactSerializer, **_COMMON_ERRORS},
        examples=[response("Released bundle", ARTIFACT)],
    )
    def get(self, request, pk: int):
        visible = ModelVersion.objects.visible_to(request.user)
        version = get_object_or_404(visible, pk=pk)
        return Response(ModelVersionArtifactSerializer(version).data)

    @extend_schema(
        operation_id="model_versions_artifact_upload",
        summary="Upload the ONNX bundle as the raw body (or multipart)",
        description=(
            "The body is the bundle: one `model.onnx`, or a zip / tar / tar.gz "
            "holding model.onnx (or decoder_model_merged.onnx), external weights, "
            "tokenizer.json and config files. It is streamed to disk with its "
            "SHA-256, unpacked and inspected; on success the original is stored "
            "and 202 returns the facts with `artifact_state` `pending`: a worker "
            "then self-tests the model in the sandbox and sets `available` "
            "(released, content frozen) or `failed` with `artifact_error`. Poll "
            "`GET .../artifact/`. A refusal stores nothing. Send `Content-Type: "
            "application/octet-stream`; multipart with one part `file` is "
            "accepted too."
        ),
        **_MODEL_UPLOAD_DOC,
    )
    def put(self, request, pk: int):
        return self._upload(request, pk)

    @extend_schema(
        operation_id="model_versions_artifact_upload_form",
        summary="Upload the ONNX bundle as multipart part `file` (or raw body)",
        description="Same as PUT; the usual form for browsers and `curl -F`.",
        **_MODEL_UPLOAD_DOC,
    )
    def post(self, request, pk: int):
        return self._upload(request, pk)

    def _upload(self, request, pk: int) -> Response:
        version = get_object_or_404(
            ModelVersion.objects.editable_by(request.user), pk=pk
        )
        artifacts.model_version_artifact_check(version=version)
        upload = received_upload(request)
        try:
            version = artifacts.model_version_artifact_upload(
                actor=request.user, version=version, upload=upload
            )
        finally:
            remove_spooled(upload)
        return Response(
            ModelVersionArtifactSerializer(version).data,
            status=status.HTTP_202_ACCEPTED,
        )


class ModelVersionArtifactReferenceView(APIView):
    """Register a model version's bundle by reference, verified by a worker."""

    parser_classes = [JSONParser]
    throttle_scope = "upload"

    def get_throttles(self):
        """The default throttles, plus the ``upload`` scope."""
        return [*super().get_throttles(), ScopedRateThrottle()]

    @extend_schema(
        operation_id="model_versions_artifact_reference",
        summary="Register the ONNX bundle by reference (verified by a worker)",
        description=(
            "The version becomes `pending`; a worker copies the file into the "
            "artifact store, computing its SHA-256 on the way, compares it with "
            "`sha256`, inspects the bundle and sets `available` (released) or "
            "`failed` with `artifact_error`. Poll `GET .../artifact/`. Only "
            "`file://` paths inside CIVITAS_REFERENCE_ROOTS are accepted, and "
            "`s3://` when an S3 endpoint is configured; HTTP(S) never."
        ),
        request=ArtifactReferenceSerializer,
        responses={
            202: ModelVersionArtifactSerializer,
            400: _problem(
                "The URI is not allowed (reference_scheme_not_allowed, "
                "reference_not_allowed) or the body is invalid.",
                OpenApiExample(
                    "HTTP URL",
                    value={
                        "code": "reference_scheme_not_allowed",
                        "message": "References with the scheme 'https' are not "
                        "accepted: use a file:// path inside "
                        "CIVITAS_REFERENCE_ROOTS, or s3:// when an S3 endpoint "
                        "is configured. HTTP(S) URLs are never fetched; upload "
                        "the file instead.",
                    },
                    status_codes=["400"],
                ),
            ),
            409: _problem("The version already has an artifact (or one is pending)."),
            **_COMMON_ERRORS,
        },
        examples=[
            OpenApiExample(
                "Shared volume",
                value={
                    "uri": "file:///srv/civitas-drop/city-a/assistant-1.2.0.zip",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015"
                    "a3bf4f1b2b0b822cd15d6c15b0f00a08",
                },
                request_only=True,
            ),
        ],
    )
    def post(self, request, pk: int):
        version = get_object_or_404(
            ModelVersion.objects.editable_by(request.user), pk=pk
        )
        serializer = ArtifactReferenceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = artifacts.model_version_artifact_reference(
            actor=request.user, version=version, **serializer.validated_data
        )
        return Response(
            ModelVersionArtifactSerializer(version).data,
            status=status.HTTP_202_ACCEPTED,
        )


_DOWNLOAD_RESPONSES = {
    (200, "application/octet-stream"): OpenApiResponse(
        OpenApiTypes.BINARY,
        description="The stored file, streamed, with `Digest: sha-256=<base64>`, "
        "`X-Content-SHA256: <hex>` and an attachment `Content-Disposition`.",
    ),
    409: _problem(
        "No verified file yet.",
        OpenApiExample(
            "Pending verification",
            value={
                "code": "artifact_not_available",
                "message": "The artifact is not available: it was never uploaded, "
                "is still being verified, or was refused.",
            },
            status_codes=["409"],
        ),
    ),
    **_COMMON_ERRORS,
}


class ModelVersionDownloadView(APIView):
    """Stream a model version's verified bundle."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = IgnoreAcceptNegotiation

    @extend_schema(
        operation_id="model_versions_download",
        summary="Download the verified ONNX bundle",
        responses=_DOWNLOAD_RESPONSES,
    )
    def get(self, request, pk: int):
        version = get_object_or_404(
            ModelVersion.objects.visible_to(request.user).select_related(
                "model__agency"
            ),
            pk=pk,
        )
        download = downloads.model_version_download(actor=request.user, version=version)
        return _file_response(download)


_DATASET_UPLOAD_DOC = dict(
    request=_UPLOAD_BODY,
    parameters=[_FILENAME_HEADER],
    responses={
        201: DatasetVersionFileSerializer,
        400: _problem("Missing, empty or multi-part upload."),
        409: _problem("The dataset version already has its file."),
        411: _problem("No Content-Length (chunked bodies are not accepted)."),
        413: _TOO_LARGE,
        415: _problem("Unsupported Content-Type."),
        **_COMMON_ERRORS,
    },
    examples=[response("Stored", DATASET_FILE, status=201)],
)


class DatasetVersionFileView(_UploadView):
    """A dataset version's data file: read its state, or upload it once."""

    @extend_schema(
        operation_id="dataset_versions_file_retrieve",
        summary="Data file state of a dataset version",
        responses={200: DatasetVersionFileSerializer, **_COMMON_ERRORS},
        examples=[response("Stored file", DATASET_FILE)],
    )
    def get(self, request, pk: int):
        dataset_version = get_object_or_404(
            DatasetVersion.objects.visible_to(request.user), pk=pk
        )
        return Response(DatasetVersionFileSerializer(dataset_version).data)

    @extend_schema(
        operation_id="dataset_versions_file_upload",
        summary="Upload the data file as the raw body (or multipart)",
        description=(
            "Any format (JSONL, CSV, Parquet...); not inspected. Streamed to disk "
            "with its SHA-256 and stored once: dataset versions are immutable "
            "once their file is attached."
        ),
        **_DATASET_UPLOAD_DOC,
    )
    def put(self, request, pk: int):
        return self._upload(request, pk)

    @extend_schema(
        operation_id="dataset_versions_file_upload_form",
        summary="Upload the data file as multipart part `file` (or raw body)",
        **_DATASET_UPLOAD_DOC,
    )
    def post(self, request, pk: int):
        return self._upload(request, pk)

    def _upload(self, request, pk: int) -> Response:
        dataset_version = get_object_or_404(
            DatasetVersion.objects.editable_by(request.user), pk=pk
        )
        artifacts.dataset_version_file_check(dataset_version=dataset_version)
        upload = received_upload(request)
        try:
            dataset_version = artifacts.dataset_version_file_upload(
                actor=request.user, dataset_version=dataset_version, upload=upload
            )
        finally:
            remove_spooled(upload)
        return Response(
            DatasetVersionFileSerializer(dataset_version).data,
            status=status.HTTP_201_CREATED,
        )


class DatasetVersionFileReferenceView(APIView):
    """Register a dataset version's data file by reference, verified by a worker."""

    parser_classes = [JSONParser]
    throttle_scope = "upload"

    def get_throttles(self):
        """The default throttles, plus the ``upload`` scope."""
        return [*super().get_throttles(), ScopedRateThrottle()]

    @extend_schema(
        operation_id="dataset_versions_file_reference",
        summary="Register the data file by reference (verified by a worker)",
        description=(
            "The dataset version becomes `pending` (`source_uri` set); a worker "
            "copies the file into the artifact store, computing its SHA-256 on "
            "the way, compares it with `sha256` and sets `available` (digest, "
            "size, storage key) or `failed` with `artifact_error`. Poll "
            "`GET .../file/`. The same URIs as model references: `file://` "
            "paths inside CIVITAS_REFERENCE_ROOTS, `s3://` when an S3 endpoint "
            "is configured; HTTP(S) never."
        ),
        request=ArtifactReferenceSerializer,
        responses={
            202: DatasetVersionFileSerializer,
            400: _problem(
                "The URI is not allowed (reference_scheme_not_allowed, "
                "reference_not_allowed) or the body is invalid.",
                OpenApiExample(
                    "Outside the allowed directories",
                    value={
                        "code": "reference_not_allowed",
                        "message": "The reference resolves outside the allowed "
                        "directories; only files inside the directories listed "
                        "in CIVITAS_REFERENCE_ROOTS can be registered by "
                        "reference. Upload the file instead.",
                    },
                    status_codes=["400"],
                ),
            ),
            409: _problem(
                "The dataset version already has its file (or one is pending)."
            ),
            **_COMMON_ERRORS,
        },
        examples=[
            OpenApiExample(
                "Shared volume",
                value={
                    "uri": "file:///srv/civitas-drop/arden/citizen-requests.jsonl",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015"
                    "a3bf4f1b2b0b822cd15d6c15b0f00a08",
                },
                request_only=True,
            ),
            OpenApiExample(
                "Pending verification",
                value={
                    "id": 12,
                    "artifact_state": "pending",
                    "artifact_error": "",
                    "digest": "9f86d081884c7d659a2feaa0c55ad015"
                    "a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "size_bytes": None,
                    "original_filename": "citizen-requests.jsonl",
                    "source_uri": "file:///srv/civitas-drop/arden/"
                    "citizen-requests.jsonl",
                },
                response_only=True,
                status_codes=["202"],
            ),
        ],
    )
    def post(self, request, pk: int):
        dataset_version = get_object_or_404(
            DatasetVersion.objects.editable_by(request.user), pk=pk
        )
        serializer = ArtifactReferenceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dataset_version = artifacts.dataset_version_file_reference(
            actor=request.user,
            dataset_version=dataset_version,
            **serializer.validated_data,
        )
        return Response(
            DatasetVersionFileSerializer(dataset_version).data,
            status=status.HTTP_202_ACCEPTED,
        )


class DatasetVersionDownloadView(APIView):
    """Stream a dataset version's data file."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = IgnoreAcceptNegotiation

    @extend_schema(
        operation_id="dataset_versions_download",
        summary="Download the data file",
        responses=_DOWNLOAD_RESPONSES,
    )
    def get(self, request, pk: int):
        dataset_version = get_object_or_404(
            DatasetVersion.objects.visible_to(request.user).select_related(
                "dataset__agency"
            ),
            pk=pk,
        )
        download = downloads.dataset_version_download(
            actor=request.user, dataset_version=dataset_version
        )
        return _file_response(download)
