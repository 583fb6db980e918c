"""Merkle proofs of the audit log under ``/api/v1/audit/`` (docs/audit.md).

``tree-heads/`` lists the signed tree heads, ``proofs/inclusion`` proves one
event is in the tree of a given size, ``proofs/consistency`` proves a tree
extends an earlier one. Every signed user may read tree heads and
consistency proofs: they are hashes of the whole log and say nothing of any
agency. An inclusion proof names one event, so it is served only for an event
the caller may read in the events API (their agency's; every event for
oversight); any other seq answers 404 as a missing one does.
"""

from __future__ import annotations

from django import forms
from django.http import Http404
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, permissions, serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import services as audit
from audit.models import AuditCheckpoint
from config.pagination import CursorPagination
from governance.api.audit import visible_events
from governance.api.examples import response

_HASH = "5f1d2a0c8e4b7d93a6c1e0f2b3d4a5968778695a4b3c2d1e0f9e8d7c6b5a4938"
TREE_HEAD = {
    "tree_size": 1042,
    "root_hash": _HASH,
    "head_hash": "e3b98a4d" + "0" * 56,
    "timestamp": "2026-03-02T10:00:00.000000Z",
    "envelope": {
        "payloadType": "application/vnd.civitas.audit-checkpoint+json",
        "payload": "eyJzZXEiOjEwNDIsInRyZWVfc2l6ZSI6MTA0Mn0=",
        "signatures": [{"keyid": "9a7c" + "0" * 60, "sig": "MEQCIF0v...Yw=="}],
    },
}
INCLUSION = {
    "seq": 7,
    "leaf_index": 6,
    "tree_size": 1042,
    "event_hash": "e3b98a4d" + "1" * 56,
    "leaf_hash": "0c2f" + "2" * 60,
    "path": ["a1" * 32, "b2" * 32, "c3" * 32],
    "root_hash": _HASH,
    "tree_head": TREE_HEAD,
}
CONSISTENCY = {
    "first": 1000,
    "second": 1042,
    "first_root": "7e" * 32,
    "second_root": _HASH,
    "path": ["d4" * 32, "e5" * 32],
}

_SIZE = forms.IntegerField(min_value=0, max_value=2**62)


def _size(request, name: str, *, required: bool = True) -> int | None:
    """A non-negative integer query parameter; 400 with a field message if not."""
    raw = request.query_params.get(name)
    if raw is None and not required:
        return None
    try:
        return _SIZE.clean(raw)
    except forms.ValidationError:
        raise serializers.ValidationError(
            {name: ["A non-negative integer is required."]}
        ) from None


def _bad_sizes(exc: Exception, field: str) -> serializers.ValidationError:
    """No such tree or proof in the log as it stands (``no_such_tree``)."""
    return serializers.ValidationError(
        {field: [ErrorDetail(str(exc), code="no_such_tree")]}
    )


# A tree size or seq in the schema: what ``_size`` accepts.
_SIZE_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 2**62}


_HASHES = serializers.ListField(child=serializers.CharField())


class AuditTreeHeadSerializer(serializers.ModelSerializer):
    """A signed tree head: size, Merkle root, timestamp and the DSSE envelope."""

    tree_size = serializers.IntegerField(source="seq", read_only=True)
    timestamp = serializers.DateTimeField(source="created_at", read_only=True)
    envelope = serializers.JSONField(read_only=True)

    class Meta:
        model = AuditCheckpoint
        fields = ["tree_size", "root_hash", "head_hash", "timestamp", "envelope"]
        read_only_fields = fields


class TreeHeadPagination(CursorPagination):
    """Newest first."""

    ordering = "-seq"


@extend_schema(examples=[response("Signed tree head", TREE_HEAD)])
class AuditTreeHeadListView(generics.ListAPIView):
    """Signed tree heads (the checkpoints that carry a Merkle root), newest first."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = AuditTreeHeadSerializer
    pagination_class = TreeHeadPagination
    filter_backends: list = []

    def get_queryset(self):
        return AuditCheckpoint.objects.exclude(root_hash="")


class AuditInclusionProofView(APIView):
    """The inclusion proof of one event in the tree of ``tree_size`` events."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "event", _SIZE_SCHEMA, required=True, description="the seq"
            ),
            OpenApiParameter(
                "tree_size",
                _SIZE_SCHEMA,
                description="default: the newest signed tree head holding the event",
            ),
        ],
        responses={
            200: inline_serializer(
                "AuditInclusionProof",
                {
                    "seq": serializers.IntegerField(),
                    "leaf_index": serializers.IntegerField(),
                    "tree_size": serializers.IntegerField(),
                    "event_hash": serializers.CharField(),
                    "leaf_hash": serializers.CharField(),
                    "path": _HASHES,
                    "root_hash": serializers.CharField(),
                    "tree_head": AuditTreeHeadSerializer(allow_null=True),
                },
            )
        },
        examples=[response("Event 7 in the tree of 1042", INCLUSION)],
    )
    def get(self, request):
        seq = _size(request, "event")
        tree_size = _size(request, "tree_size", required=False)
        event = visible_events(request.user).filter(seq=seq).first()
        if event is None:
            raise Http404
        try:
            proof = audit.inclusion_proof(event, tree_size)
        except audit.ProofError as exc:
            raise _bad_sizes(exc, "tree_size") from None
        return Response(proof.to_dict())


class AuditConsistencyProofView(APIView):
    """The proof that the tree of ``second`` events extends that of ``first``."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter("first", _SIZE_SCHEMA, required=True),
            OpenApiParameter(
                "second",
                _SIZE_SCHEMA,
                description="default: the newest signed tree head",
            ),
        ],
        responses={
            200: inline_serializer(
                "AuditConsistencyProof",
                {
                    "first": serializers.IntegerField(),
                    "second": serializers.IntegerField(),
                    "first_root": serializers.CharField(),
                    "second_root": serializers.CharField(),
                    "path": _HASHES,
                },
            )
        },
        examples=[response("From 1000 to 1042 events", CONSISTENCY)],
    )
    def get(self, request):
        first = _size(request, "first")
        second = _size(request, "second", required=False)
        try:
            proof = audit.consistency_proof(first, second)
        except audit.ProofError as exc:
            raise _bad_sizes(exc, "second") from None
        return Response(proof.to_dict())


# --- Routes (mounted under /api/v1/audit/ beside governance.api.audit's) ----------

app_name = "audit_proofs"

urlpatterns = [
    path("tree-heads/", AuditTreeHeadListView.as_view(), name="tree-heads"),
    path("proofs/inclusion", AuditInclusionProofView.as_view(), name="inclusion"),
    path("proofs/consistency", AuditConsistencyProofView.as_view(), name="consistency"),
]
