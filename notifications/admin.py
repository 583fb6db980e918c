"""Admin of webhooks (read-only: managed through the API's services) and deliveries.

Secrets are never shown. Maintainers see their agency's rows, platform
administrators every agency's (the same ``visible_to`` as the API).
"""

from __future__ import annotations

from django.contrib import admin

from notifications.models import Webhook, WebhookDelivery


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)


@admin.register(Webhook)
class WebhookAdmin(_ReadOnly):
    list_display = ("id", "agency", "url", "is_enabled", "created_at")
    list_filter = ("is_enabled",)
    search_fields = ("url", "description", "agency__slug")
    fields = (
        "agency",
        "url",
        "description",
        "event_types",
        "is_enabled",
        "secret_rotated_at",
        "previous_secret_expires_at",
        "created_by",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request):
        return Webhook.objects.visible_to(request.user).select_related("agency")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnly):
    list_display = (
        "id",
        "webhook",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    )
    list_filter = ("status", "event_type")
    search_fields = ("event_id", "event_type")
    readonly_fields = (
        "webhook",
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
    )

    def get_queryset(self, request):
        return WebhookDelivery.objects.visible_to(request.user).select_related(
            "webhook__agency"
        )
