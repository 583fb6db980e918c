"""Input and output shapes of the webhooks API. Secrets are written, never read."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from notifications.events import EVENT_TYPES
from notifications.models import Webhook, WebhookDelivery
from registry.models import Agency

_EVENT_TYPES = sorted(EVENT_TYPES)


@extend_schema_field(
    {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2000}
)
class WebhookUrlField(serializers.URLField):
    """An http(s) URL; the schema says so, so clients learn it before they send."""


class WebhookSerializer(serializers.ModelSerializer):
    agency = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=_EVENT_TYPES), read_only=True
    )

    class Meta:
        model = Webhook
        fields = [
            "id",
            "agency",
            "url",
            "description",
            "event_types",
            "is_enabled",
            "secret_rotated_at",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WebhookSecretSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret (whsec_...). Shown in this response only.",
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookCreateSerializer(serializers.Serializer):
    agency = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Agency.objects.all(),
        required=False,
        help_text="Platform administrators name the agency; maintainers get theirs.",
    )
    url = WebhookUrlField(max_length=2000)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=_EVENT_TYPES),
        allow_empty=False,
        min_length=1,
        max_length=len(_EVENT_TYPES),
    )
    description = serializers.CharField(max_length=200, required=False, default="")
    is_enabled = serializers.BooleanField(required=False, default=True)


class WebhookUpdateSerializer(serializers.Serializer):
    url = WebhookUrlField(max_length=2000, required=False)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=_EVENT_TYPES),
        allow_empty=False,
        min_length=1,
        max_length=len(_EVENT_TYPES),
        required=False,
    )
    description = serializers.CharField(max_length=200, required=False)
    is_enabled = serializers.BooleanField(required=False)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    status_codes = serializers.ListField(
        child=serializers.IntegerField(allow_null=True), read_only=True
    )
    payload = serializers.JSONField(read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "audit_seq",
            "payload",
            "status",
            "attempts",
            "status_codes",
            "last_error",
            "response_excerpt",
            "next_attempt_at",
            "delivered_at",
            "created_at",
        ]
        read_only_fields = fields
