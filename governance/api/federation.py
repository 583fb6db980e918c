"""HTTP endpoints of federation: peers, bundle exports and imports.

``POST /api/v1/federation/exports/`` answers a version's signed bundle
(its agency's maintainers and oversight); ``POST /api/v1/federation/imports/``
verifies and imports an uploaded bundle, ``/api/v1/federation/peers/`` lists
and registers trusted peers (platform administrators only). Refusals are
``{"code": reason, "message": ...}`` with reason ``bad_signature``,
``unknown_key``, ``digest_mismatch``, ``bad_proof``, ``malformed`` (400) or
``replayed`` (409).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from config.exceptions import ApiErrorSerializer, PayloadTooLarge
from governance.federation.services import bundle_export, bundle_import, peer_create
from governance.models import FederationImport, FederationPeer
from registry.api.catalogue import BoundedJSONParser
from registry.models import ModelVersion, Role, user_agency_id, user_role
from registry.selectors import is_oversight, is_platform_admin


class IsPlatformAdmin(BasePermission):
    message = _("Only platform administrators manage federation.")

    def has_permission(self, request, view) -> bool:
        return is_platform_admin(request.user)


class PeerSerializer(serializers.ModelSerializer):
    jurisdiction = serializers.CharField(write_only=True, max_length=6)
    agency = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = FederationPeer
        fields = [
            "id", "name", "base_url", "public_key_pem", "key_id",
            "agency", "jurisdiction", "created_at",
        ]  # fmt: skip
        read_only_fields = ["key_id", "agency", "created_at"]


class ExportRequestSerializer(serializers.Serializer):
    model_version = serializers.IntegerField()
    include_artifacts = serializers.BooleanField(default=False)
    since_tree_size = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="The tree size the importer last saw: adds a consistency proof.",
    )


class ImportRequestSerializer(serializers.Serializer):
    bundle = serializers.FileField()
    peer = serializers.PrimaryKeyRelatedField(
        queryset=FederationPeer.objects.all(), required=False
    )


class ImportResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    peer = serializers.CharField()
    origin_model_id = serializers.CharField()
    tree_size = serializers.IntegerField()
    bundle_sha256 = serializers.CharField()
    summary = serializers.DictField()


PEER_EXAMPLE = {
    "id": 1,
    "name": "civitas-nord",
    "base_url": "https://civitas.nord.example/",
    "public_key_pem": (
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA...\n-----END PUBLIC KEY-----\n"
    ),
    "key_id": "3f1c9a...",
    "agency": "fed-civitas-nord",
    "created_at": "2026-12-04T17:00:00Z",
}
IMPORT_EXAMPLE = {
    "id": 3,
    "peer": "civitas-nord",
    "origin_model_id": "12",
    "tree_size": 1042,
    "bundle_sha256": "9f2c...",
    "summary": {
        "model_id": 7,
        "model_version_id": 19,
        "origin_version_id": "41",
        "origin_status": "approved",
        "datasets": 2,
        "attestations": 3,
        "events": 14,
        "artifact_stored": False,
        "tree_size": 1042,
    },
}
REFUSAL_EXAMPLE = {
    "code": "digest_mismatch",
    "message": "metadata.json does not match its digest.",
}


def _import_payload(record) -> dict:
    return {
        "id": record.pk,
        "peer": record.peer.name,
        "origin_model_id": record.origin_model_id,
        "tree_size": record.tree_size,
        "bundle_sha256": record.bundle_sha256,
        "summary": record.summary,
    }


class PeerListView(APIView):
    """Trusted peer platforms (platform administrators)."""

    permission_classes = [IsPlatformAdmin]
    parser_classes = [BoundedJSONParser]

    @extend_schema(
        operation_id="federation_peers_list",
        summary="List trusted federation peers",
        responses={
            200: OpenApiResponse(
                PeerSerializer(many=True),
                examples=[OpenApiExample("Peers", value=[PEER_EXAMPLE])],
            )
        },
        tags=["federation"],
    )
    def get(self, request):
        peers = FederationPeer.objects.select_related("agency")
        return Response(PeerSerializer(peers, many=True).data)

    @extend_schema(
        operation_id="federation_peers_create",
        summary="Trust a peer platform (its Ed25519 public key)",
        request=PeerSerializer,
        examples=[
            OpenApiExample(
                "Peer", value={**PEER_EXAMPLE, "jurisdiction": "FR"}, request_only=True
            )
        ],
        responses={
            201: OpenApiResponse(
                PeerSerializer, examples=[OpenApiExample("Peer", value=PEER_EXAMPLE)]
            ),
            400: ApiErrorSerializer,
        },
        tags=["federation"],
    )
    def post(self, request):
        data = PeerSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        peer = peer_create(actor=request.user, **data.validated_data)
        return Response(PeerSerializer(peer).data, status=status.HTTP_201_CREATED)


def _may_export(user, version: ModelVersion) -> bool:
    if is_oversight(user):
        return True
    maintainer = user_role(user) == Role.MAINTAINER
    return maintainer and user_agency_id(user) == version.model.agency_id


class ExportView(APIView):
    """A model version's signed federation bundle."""

    parser_classes = [BoundedJSONParser]

    @extend_schema(
        operation_id="federation_exports_create",
        summary="Export a model version as a signed federation bundle",
        description=(
            "Answers a tar.gz archive: `manifest.json` (SHA-256 of every member), "
            "`manifest.dsse.json` (DSSE envelope, Ed25519, this platform's key), "
            "metadata, attestations, audit events with inclusion proofs and the "
            "signed tree head; the artifact too with `include_artifacts`."
        ),
        request=ExportRequestSerializer,
        examples=[
            OpenApiExample(
                "Export",
                value={"model_version": 41, "include_artifacts": False},
                request_only=True,
            )
        ],
        responses={
            (200, "application/gzip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The bundle."
            ),
            400: ApiErrorSerializer,
            404: ApiErrorSerializer,
            409: ApiErrorSerializer,
        },
        tags=["federation"],
    )
    def post(self, request):
        data = ExportRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = get_object_or_404(
            ModelVersion.objects.visible_to(request.user).select_related("model"),
            pk=data.validated_data["model_version"],
        )
        if not _may_export(request.user, version):
            raise PermissionDenied(
                _("Only the agency's maintainers and oversight export.")
            )
        out = tempfile.TemporaryFile()  # noqa: SIM115  (FileResponse closes it)
        manifest = bundle_export(
            actor=request.user,
            version=version,
            out=out,
            include_artifacts=data.validated_data["include_artifacts"],
            since_tree_size=data.validated_data.get("since_tree_size"),
        )
        out.seek(0)
        size = manifest["tree_size"]
        name = f"{version.model.slug}-{version.version}-{size}.civitas.tar.gz"
        return FileResponse(
            out, as_attachment=True, filename=name, content_type="application/gzip"
        )


class ImportView(APIView):
    """Verify and import a peer's bundle (platform administrators)."""

    permission_classes = [IsPlatformAdmin]
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="federation_imports_list",
        summary="List the bundles imported from peers, newest first",
        responses={
            200: OpenApiResponse(
                ImportResultSerializer(many=True),
                examples=[OpenApiExample("Imports", value=[IMPORT_EXAMPLE])],
            )
        },
        tags=["federation"],
    )
    def get(self, request):
        records = FederationImport.objects.select_related("peer")[:200]
        return Response([_import_payload(record) for record in records])

    @extend_schema(
        operation_id="federation_imports_create",
        summary="Import a peer's signed federation bundle",
        request={"multipart/form-data": ImportRequestSerializer},
        responses={
            201: OpenApiResponse(
                ImportResultSerializer,
                examples=[OpenApiExample("Imported", value=IMPORT_EXAMPLE)],
            ),
            400: OpenApiResponse(
                ApiErrorSerializer,
                examples=[OpenApiExample("Tampered", value=REFUSAL_EXAMPLE)],
            ),
            413: ApiErrorSerializer,
            409: OpenApiResponse(
                ApiErrorSerializer,
                examples=[
                    OpenApiExample(
                        "Replayed",
                        value={
                            "code": "replayed",
                            "message": "A newer bundle was already imported.",
                        },
                    )
                ],
            ),
        },
        tags=["federation"],
    )
    def post(self, request):
        data = ImportRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["bundle"]
        if upload.size > settings.CIVITAS_UPLOAD_MAX_BYTES:
            raise PayloadTooLarge(
                "The bundle is larger than CIVITAS_UPLOAD_MAX_BYTES.",
                code="too_large",
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bundle.tar.gz"
            with path.open("wb") as dst:
                for chunk in upload.chunks():
                    dst.write(chunk)
            record = bundle_import(
                actor=request.user, archive=path, peer=data.validated_data.get("peer")
            )
        return Response(_import_payload(record), status=status.HTTP_201_CREATED)
