"""Admin of the governance app. The audit chain is read-only here."""

from __future__ import annotations

from django.contrib import admin

from governance.models import AuditCheckpoint, AuditEvent

# --- Audit chain ---------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """No add, change or delete: the record is written by governance.audit only."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "seq",
        "created_at",
        "action",
        "actor_label",
        "agency_slug",
        "object_type",
        "object_id",
        "short_hash",
    ]
    list_filter = ["action", "object_type", "created_at"]
    search_fields = ["=seq", "action", "actor_label", "agency_slug", "=object_id"]
    ordering = ["-seq"]
    # A count of a million-row chain on every page view is wasted work.
    show_full_result_count = False
    fields = [
        "seq",
        "created_at",
        "actor",
        "actor_label",
        "agency",
        "agency_slug",
        "action",
        "object_type",
        "object_id",
        "payload",
        "prev_hash",
        "hash",
    ]
    readonly_fields = fields

    @admin.display(description="hash")
    def short_hash(self, event: AuditEvent) -> str:
        return event.hash[:12]


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    list_display = ["seq", "created_at", "head_hash"]
    list_filter = ["created_at"]
    search_fields = ["=seq", "head_hash"]
    ordering = ["-seq"]
    fields = ["seq", "head_hash", "created_at", "envelope"]
    readonly_fields = fields


import governance.decision_admin  # noqa: E402  (registers its models)
import governance.evaluation_admin  # noqa: E402  (registers its models)
import governance.usecase_admin  # noqa: E402, F401  (registers its models)
