"""Admin of the audit app, read-only: the chain, its checkpoints, security events."""

from __future__ import annotations

from django.contrib import admin

from audit.models import AuditCheckpoint, AuditEvent, SecurityEvent
from config.admin import ReadOnlyAdmin


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


@admin.register(SecurityEvent)
class SecurityEventAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "action",
        "actor_label",
        "method",
        "path",
        "status_code",
        "agency_slug",
        "suppressed",
    ]
    list_filter = ["action", "status_code", "created_at"]
    search_fields = ["actor_label", "agency_slug", "path", "=object_id"]
    ordering = ["-created_at", "-id"]
    show_full_result_count = False
    fields = [
        "created_at",
        "action",
        "actor",
        "actor_label",
        "agency",
        "agency_slug",
        "method",
        "path",
        "status_code",
        "object_type",
        "object_id",
        "suppressed",
    ]
    readonly_fields = fields
