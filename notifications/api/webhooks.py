"""REST API of an agency's webhooks under /api/v1/webhooks/.

Agency maintainers manage their agency's webhooks and platform administrators
every agency's; to anyone else a webhook does not exist (404, and an empty
list). The secret is in the answer to creation and rotation only.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from notifications import selectors, services
from notifications.api.examples import (
    CREATE,
    DELIVERY,
    PING,
    WEBHOOK,
    WEBHOOK_WITH_SECRET,
)
from notifications.api.serializers import (
    WebhookCreateSerializer,
    WebhookDeliverySerializer,
    WebhookSecretSerializer,
    WebhookSerializer,
    WebhookUpdateSerializer,
)
from notifications.models import Webhook
from registry.api.catalogue import READ_ERRORS, WRITE_ERRORS, CatalogueViewSet, errors
from registry.api.examples import request, response


def _with_secret(webhook: Webhook, secret: str) -> dict:
    webhook.secret = secret
    return WebhookSecretSerializer(webhook).data


@extend_schema_view(
    list=extend_schema(
        summary="List the webhooks you manage",
        description="Maintainers see their agency's; platform administrators all.",
        responses={200: WebhookSerializer(many=True), **errors(401)},
        examples=[response("A webhook", WEBHOOK)],
    ),
    retrieve=extend_schema(
        summary="Read a webhook (never its secret)",
        responses={200: WebhookSerializer, **READ_ERRORS},
        examples=[response("A webhook", WEBHOOK)],
    ),
    create=extend_schema(
        summary="Register a webhook; the answer holds its secret, once",
        description=(
            "Deliveries are signed per Standard Webhooks with the `whsec_` "
            "secret returned here and never again (see docs/notifications.md). "
            "The URL must be https; private, loopback and link-local addresses "
            "are refused."
        ),
        request=WebhookCreateSerializer,
        responses={201: WebhookSecretSerializer, **WRITE_ERRORS},
        examples=[
            request("Status changes and suspensions", CREATE),
            response("Registered", WEBHOOK_WITH_SECRET, status=201),
        ],
    ),
    partial_update=extend_schema(
        summary="Change a webhook's URL, events, description or enabled flag",
        request=WebhookUpdateSerializer,
        responses={200: WebhookSerializer, **WRITE_ERRORS},
        examples=[
            request("Disable", {"is_enabled": False}),
            response("Disabled", {**WEBHOOK, "is_enabled": False}),
        ],
    ),
)
class WebhookViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogueViewSet
):
    """An agency's webhooks, their secrets and their delivery log."""

    serializer_class = WebhookSerializer
    filter_backends: list = []

    def get_queryset(self):
        return selectors.webhook_list(self.request.user)

    def create(self, request):
        data = WebhookCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        agency = values.pop("agency", None)
        webhook, secret = services.webhook_create(
            actor=request.user, agency=agency, **values
        )
        return Response(_with_secret(webhook, secret), status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        webhook = self.get_object()
        data = WebhookUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        webhook = services.webhook_update(
            actor=request.user, webhook=webhook, **data.validated_data
        )
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(
        summary="Rotate the secret; the old one keeps signing for a grace period",
        description=(
            "The answer holds the new secret, once. For "
            "`CIVITAS_WEBHOOK_SECRET_GRACE_HOURS` (24 by default) every delivery "
            "carries two signatures, the new secret's and the old one's."
        ),
        request=None,
        responses={200: WebhookSecretSerializer, **errors(401, 403, 404)},
        examples=[response("Rotated", WEBHOOK_WITH_SECRET)],
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        webhook, secret = services.webhook_rotate_secret(
            actor=request.user, webhook=self.get_object()
        )
        return Response(_with_secret(webhook, secret))

    @extend_schema(
        summary="Send a signed webhook.ping event now (queued)",
        request=None,
        responses={202: WebhookDeliverySerializer, **errors(401, 403, 404)},
        examples=[response("Queued", PING, status=202)],
    )
    @action(detail=True, methods=["post"])
    def ping(self, request, pk=None):
        delivery = services.webhook_ping(actor=request.user, webhook=self.get_object())
        return Response(
            WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(
        summary="The webhook's delivery log, newest first",
        responses={200: WebhookDeliverySerializer(many=True), **READ_ERRORS},
        examples=[response("Delivered on the third attempt", DELIVERY)],
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        webhook = self.get_object()
        page = self.paginate_queryset(selectors.delivery_list(request.user, webhook))
        data = WebhookDeliverySerializer(page, many=True).data
        return self.get_paginated_response(data)
