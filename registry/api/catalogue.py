"""REST API of the catalogue under /api/v1/.

Reads go through the selectors, so every list, filter, search and detail
lookup sees only what the caller may read; another agency's private object
answers 404 exactly like an id never used, and ``audit.middleware`` records
the attempt as an ``authz.denied`` security event (SECURITY C1). Writes
validate with an input serializer, call one service and answer with the
output serializer. JSON is the only request format (415 otherwise).
Catalogue records are never deleted through the API: no DELETE route exists
for them.
"""

from __future__ import annotations

import io

from django.http import Http404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from config.exceptions import PayloadTooLarge
from registry import read_cache, selectors, services
from registry.api import detail
from registry.api.examples import (
    DATASET,
    DATASET_VERSION,
    LICENCE,
    MODEL,
    MODEL_VERSION,
    MODEL_VERSION_UNRELEASED,
    request,
    response,
)
from registry.api.filters import (
    DatasetFilter,
    DatasetVersionFilter,
    LicenceFilter,
    ModelFilter,
    ModelVersionFilter,
)
from registry.api.serializers import (
    AIModelSerializer,
    ApiErrorSerializer,
    DatasetCreateSerializer,
    DatasetSerializer,
    DatasetUpdateSerializer,
    DatasetVersionCreateSerializer,
    DatasetVersionSerializer,
    LicenceRegisteredSerializer,
    LicenceRegisterSerializer,
    LicenceSerializer,
    ModelCreateSerializer,
    ModelUpdateSerializer,
    ModelVersionCreateSerializer,
    ModelVersionSerializer,
    ModelVersionUpdateSerializer,
)

MAX_JSON_BYTES = 1024 * 1024


class BoundedJSONParser(JSONParser):
    """JSON request bodies up to ``MAX_JSON_BYTES``; a larger one answers 413.

    DRF reads the body as a stream, past Django's DATA_UPLOAD_MAX_MEMORY_SIZE,
    so metadata endpoints set their own bound.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read(MAX_JSON_BYTES + 1) if stream is not None else b""
        if len(body) > MAX_JSON_BYTES:
            raise PayloadTooLarge(
                f"A JSON request body has at most {MAX_JSON_BYTES} bytes."
            )
        return super().parse(io.BytesIO(body), media_type, parser_context)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Documented error responses, all in the one JSON error shape."""
    descriptions = {
        400: "Invalid fields or a broken business rule; `fields` names them",
        401: "No valid token or session",
        403: "Authenticated, but not allowed to do this",
        404: "No such object among those the caller may read",
        409: "Conflicts with the current state (duplicate, released version)",
        413: "The JSON body is larger than 1 MiB",
        415: "The body is not JSON",
    }
    return {
        code: OpenApiResponse(ApiErrorSerializer, description=descriptions[code])
        for code in codes
    }


READ_ERRORS = errors(401, 404)
WRITE_ERRORS = errors(400, 401, 403, 404, 409, 413, 415)


class CatalogueViewSet(viewsets.GenericViewSet):
    """Shared behaviour: JSON bodies only, tenancy-scoped lookups.

    Subclasses implement ``get_queryset`` with a selector; a lookup that
    misses answers 404 (``audit.middleware`` records it as ``authz.denied``
    when the object exists outside the caller's view).
    """

    parser_classes = [BoundedJSONParser]

    def lookup_value(self) -> str:
        """The object key from the URL."""
        return self.kwargs[self.lookup_url_kwarg or self.lookup_field]

    def get_object(self):
        """The object among those the caller may read, else 404.

        A 404 for an object hidden from the caller is recorded as
        ``authz.denied`` by ``audit.middleware``, like every other denial.
        """
        lookup = {self.lookup_field: self.lookup_value()}
        # Ordered by key alone: the list's ordering (joins and a sort) would be
        # compiled and planned for a lookup that finds one row.
        queryset = self.get_queryset().order_by("pk")
        try:
            obj = queryset.filter(**lookup).first()
        except (TypeError, ValueError):
            raise Http404 from None
        if obj is None:
            raise Http404
        self.check_object_permissions(self.request, obj)
        return obj


# --- licences ------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List registered licences",
        responses={200: LicenceSerializer(many=True), **errors(401, 400)},
        examples=[response("Apache-2.0", LICENCE)],
    ),
    retrieve=extend_schema(
        summary="Read a licence",
        responses={200: LicenceSerializer, **READ_ERRORS},
        examples=[response("Apache-2.0", LICENCE)],
    ),
    create=extend_schema(
        summary="Register an SPDX licence expression (idempotent)",
        description=(
            "The expression is normalised (`apache-2.0 or mit` becomes "
            "`Apache-2.0 OR MIT`); unknown identifiers answer 400 naming them. "
            "201 when registered now, 200 when it already was."
        ),
        request=LicenceRegisterSerializer,
        responses={
            201: LicenceRegisteredSerializer,
            200: LicenceRegisteredSerializer,
            **errors(400, 401, 415),
        },
        examples=[
            OpenApiExample(
                "Dual licence",
                value={"expression": "apache-2.0 or mit"},
                request_only=True,
            ),
            OpenApiExample(
                "Open data",
                value={"expression": "CC-BY-4.0"},
                request_only=True,
            ),
            response("Registered now", {**LICENCE, "created": True}, status=201),
        ],
    ),
)
class LicenceViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogueViewSet
):
    """Licences: shared reference data every authenticated caller reads."""

    serializer_class = LicenceSerializer
    filterset_class = LicenceFilter
    search_fields = ["expression", "name"]
    ordering_fields = ["expression", "created_at"]

    def get_queryset(self):
        return selectors.licence_list()

    def create(self, request):
        data = LicenceRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        licence, created = services.licence_register(
            actor=request.user, expression=data.validated_data["expression"]
        )
        body = LicenceRegisteredSerializer(licence).data
        body["created"] = created
        return Response(
            body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


# --- datasets ------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List datasets",
        responses={200: DatasetSerializer(many=True), **errors(401)},
        examples=[response("Citizen requests", DATASET)],
    ),
    retrieve=extend_schema(
        summary="Read a dataset",
        responses={200: DatasetSerializer, **READ_ERRORS},
        examples=[response("Citizen requests", DATASET)],
    ),
    create=extend_schema(
        summary="Register a dataset for your agency",
        request=DatasetCreateSerializer,
        responses={201: DatasetSerializer, **WRITE_ERRORS},
        examples=[
            OpenApiExample(
                "Service questions",
                value={
                    "name": "Citizen service questions",
                    "slug": "service-questions",
                    "description": "Questions citizens asked the contact centre.",
                },
                request_only=True,
            ),
            response("Registered", DATASET, status=201),
        ],
    ),
    partial_update=extend_schema(
        summary="Change a dataset's name or description (maintainers)",
        request=DatasetUpdateSerializer,
        responses={200: DatasetSerializer, **WRITE_ERRORS},
        examples=[
            request(
                "Clearer description",
                {"description": "Residents' requests to the contact centre."},
            ),
            response("Changed", DATASET),
        ],
    ),
)
class DatasetViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogueViewSet
):
    """Datasets: the caller's agency's own and public ones."""

    serializer_class = DatasetSerializer
    filterset_class = DatasetFilter
    search_fields = ["name", "slug", "description"]
    ordering_fields = ["name", "slug", "created_at"]

    def get_queryset(self):
        return selectors.dataset_list(self.request.user)

    def create(self, request):
        data = DatasetCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = services.dataset_create(actor=request.user, **data.validated_data)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        dataset = self.get_object()
        data = DatasetUpdateSerializer(dataset, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        dataset = services.dataset_update(
            actor=request.user, dataset=dataset, **data.validated_data
        )
        return Response(DatasetSerializer(dataset).data)


@extend_schema_view(
    list=extend_schema(
        summary="List dataset versions",
        responses={200: DatasetVersionSerializer(many=True), **errors(400, 401)},
        examples=[response("Citizen requests 1.0.0", DATASET_VERSION)],
    ),
    retrieve=extend_schema(
        summary="Read a dataset version and its datasheet",
        responses={200: DatasetVersionSerializer, **READ_ERRORS},
        examples=[response("Citizen requests 1.0.0", DATASET_VERSION)],
    ),
    create=extend_schema(
        summary="Register a dataset version (immutable afterwards)",
        description=(
            "Personal or pseudonymised data needs a `legal_basis`. The licence "
            "is an SPDX expression registered through /api/v1/licences/."
        ),
        request=DatasetVersionCreateSerializer,
        responses={201: DatasetVersionSerializer, **WRITE_ERRORS},
        examples=[
            OpenApiExample(
                "Datasheet",
                value={
                    "dataset": 12,
                    "version": "1.0.0",
                    "licence": "CC-BY-4.0",
                    "motivation": "Answer citizens' questions about local services.",
                    "composition": "18,000 question and answer pairs.",
                    "collection_process": "Contact-centre logs, 2024-2025.",
                    "preprocessing": "Names, addresses and numbers removed.",
                    "intended_uses": "Fine-tuning service assistants.",
                    "languages": ["fr", "en"],
                    "record_count": 18000,
                    "origin_jurisdiction": "FR",
                    "personal_data": "pseudonymised",
                    "legal_basis": "GDPR Art. 6(1)(e): public task.",
                },
                request_only=True,
            ),
            response("Registered", DATASET_VERSION, status=201),
        ],
    ),
)
class DatasetVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogueViewSet
):
    """Dataset versions: immutable releases with their datasheets (no PATCH)."""

    serializer_class = DatasetVersionSerializer
    filterset_class = DatasetVersionFilter
    search_fields = [
        "version",
        "dataset__name",
        "dataset__description",
        "motivation",
        "composition",
    ]
    ordering_fields = ["created_at", "version", "record_count"]

    def get_queryset(self):
        return selectors.dataset_version_list(self.request.user)

    def create(self, request):
        data = DatasetVersionCreateSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        data.is_valid(raise_exception=True)
        dataset_version = services.dataset_version_create(
            actor=request.user, **data.validated_data
        )
        dataset_version = self.get_queryset().get(pk=dataset_version.pk)
        return Response(
            DatasetVersionSerializer(dataset_version).data,
            status=status.HTTP_201_CREATED,
        )


# --- models --------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List models",
        responses={200: AIModelSerializer(many=True), **errors(401)},
        examples=[response("Requests assistant", MODEL)],
    ),
    retrieve=extend_schema(
        summary="Read a model",
        responses={200: AIModelSerializer, **READ_ERRORS},
        examples=[response("Requests assistant", MODEL)],
    ),
    create=extend_schema(
        summary="Register a model for your agency",
        request=ModelCreateSerializer,
        responses={201: AIModelSerializer, **WRITE_ERRORS},
        examples=[
            OpenApiExample(
                "Reply assistant",
                value={
                    "name": "Reply assistant",
                    "slug": "reply-assistant",
                    "task": "text-generation",
                    "domain": "citizen services",
                    "intended_use": "Drafting replies to citizens, reviewed by staff.",
                    "out_of_scope_uses": "Decisions on benefits or permits.",
                },
                request_only=True,
            ),
            response("Registered", MODEL, status=201),
        ],
    ),
    partial_update=extend_schema(
        summary="Change a model (maintainers); slug and visibility are fixed",
        request=ModelUpdateSerializer,
        responses={200: AIModelSerializer, **WRITE_ERRORS},
        examples=[
            request("Narrower use", {"out_of_scope_uses": MODEL["out_of_scope_uses"]}),
            response("Changed", MODEL),
        ],
    ),
)
class AIModelViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogueViewSet
):
    """Model families: the caller's agency's own and public ones."""

    serializer_class = AIModelSerializer
    filterset_class = ModelFilter
    search_fields = ["name", "slug", "description", "domain", "intended_use"]
    ordering_fields = ["name", "slug", "created_at", "updated_at"]

    def get_queryset(self):
        return selectors.model_list(self.request.user)

    def create(self, request):
        data = ModelCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = services.model_create(actor=request.user, **data.validated_data)
        return Response(AIModelSerializer(model).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        model = self.get_object()
        data = ModelUpdateSerializer(model, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        model = services.model_update(
            actor=request.user, model=model, **data.validated_data
        )
        return Response(AIModelSerializer(model).data)


@extend_schema_view(
    list=extend_schema(
        summary="List model versions",
        responses={200: ModelVersionSerializer(many=True), **errors(400, 401)},
        examples=[response("Requests assistant 1.0.0", MODEL_VERSION)],
    ),
    retrieve=extend_schema(
        summary="Read a model version",
        responses={200: ModelVersionSerializer, **READ_ERRORS},
        examples=[response("Requests assistant 1.0.0", MODEL_VERSION)],
    ),
    create=extend_schema(
        summary="Register a model version (metadata; the artifact follows)",
        description=(
            "`base_version` and every `datasets[].dataset_version` must be "
            "objects you may read; a base must be released. The version is a "
            "semantic version unique per model (409 otherwise)."
        ),
        request=ModelVersionCreateSerializer,
        responses={201: ModelVersionSerializer, **WRITE_ERRORS},
        examples=[
            OpenApiExample(
                "Fine-tuned version",
                value={
                    "model": 7,
                    "version": "1.1.0",
                    "licence": "Apache-2.0",
                    "base_version": 31,
                    "derivation": "fine-tuned",
                    "datasets": [
                        {"dataset_version": 12, "role": "fine-tuning"},
                        {"dataset_version": 15, "role": "evaluation"},
                    ],
                    "training_jurisdiction": "FR",
                    "hosting_jurisdiction": "FR",
                    "training_hardware": "2 x 32-core CPU servers",
                    "training_energy_kwh": "41.500",
                    "limitations": "French and English only.",
                },
                request_only=True,
            ),
            response(
                "Registered",
                MODEL_VERSION_UNRELEASED,
                status=201,
            ),
        ],
    ),
    partial_update=extend_schema(
        summary="Change an unreleased version's metadata",
        description=(
            "409 `version_released` once the artifact is released: register a "
            "new version instead. `datasets`, when given, replaces the links."
        ),
        request=ModelVersionUpdateSerializer,
        responses={200: ModelVersionSerializer, **WRITE_ERRORS},
        examples=[
            request(
                "Known limits",
                {
                    "limitations": MODEL_VERSION["limitations"],
                    "risks": MODEL_VERSION["risks"],
                },
            ),
            response("Changed", MODEL_VERSION_UNRELEASED),
        ],
    ),
)
class ModelVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogueViewSet
):
    """Model versions with lineage, dataset links, artifact state and graph facts."""

    serializer_class = ModelVersionSerializer
    filterset_class = ModelVersionFilter
    search_fields = [
        "version",
        "model__name",
        "model__slug",
        "model__description",
        "limitations",
    ]
    ordering_fields = ["created_at", "updated_at", "version"]

    def get_queryset(self):
        return selectors.model_version_list(self.request.user)

    def list(self, request, *args, **kwargs):
        """The page, from the catalogue read cache while nothing has changed."""
        return read_cache.cached_response(
            request,
            lambda: super(ModelVersionViewSet, self).list(request, *args, **kwargs),
        )

    def retrieve(self, request, *args, **kwargs):
        """The version, from the catalogue read cache while nothing has changed."""
        return read_cache.cached_response(
            request, lambda: self.read_detail(request, *args, **kwargs)
        )

    def read_detail(self, request, *args, **kwargs) -> Response:
        """The version: fixed SQL and a flat representation, else the serializer.

        Both give the same bytes (registry/api/detail.py); a version the
        caller may not read answers 404 either way.
        """
        if not detail.applies(self, request):
            return super().retrieve(request, *args, **kwargs)
        data = detail.version_detail(request.user, int(self.lookup_value()))
        if data is None:
            raise Http404
        return Response(data)

    def respond(self, model_version, status_code=status.HTTP_200_OK) -> Response:
        """The version re-read through the selector, as the list shows it."""
        model_version = self.get_queryset().get(pk=model_version.pk)
        serializer = ModelVersionSerializer(
            model_version, context=self.get_serializer_context()
        )
        return Response(serializer.data, status=status_code)

    def create(self, request):
        data = ModelVersionCreateSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        data.is_valid(raise_exception=True)
        model_version = services.model_version_create(
            actor=request.user, **data.validated_data
        )
        return self.respond(model_version, status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        model_version = self.get_object()
        data = ModelVersionUpdateSerializer(
            data=request.data, partial=True, context=self.get_serializer_context()
        )
        data.is_valid(raise_exception=True)
        model_version = services.model_version_update(
            actor=request.user, model_version=model_version, **data.validated_data
        )
        return self.respond(model_version)
