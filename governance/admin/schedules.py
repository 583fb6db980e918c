"""Evaluation schedules and what MLflow is owed (the outbox) in the admin."""

from __future__ import annotations

from django.contrib import admin

from config.admin import ReadOnlyInline
from governance.admin.review import _Record
from governance.models import (
    EvaluationSchedule,
    EvaluationSuite,
    ScheduleTick,
)
from governance.models.outbox import OutboxMessage
from governance.services.schedules import schedule_create, schedule_update
from registry.admin.base import ServiceAdmin
from registry.models import ModelVersion
from registry.selectors import is_oversight, user_agency_id

# --- Evaluation schedules --------------------------------------------------------
# Written through governance.services.schedules (audited; the beat entry kept in
# step); the run history is a read-only inline.



class ScheduleTickInline(ReadOnlyInline):
    model = ScheduleTick
    fk_name = "schedule"
    fields = ["ticked_at", "outcome", "run", "comparison", "baseline_run", "reason"]
    ordering = ["-ticked_at", "-id"]


@admin.register(EvaluationSchedule)
class EvaluationScheduleAdmin(ServiceAdmin):
    list_display = [
        "id",
        "model_version",
        "suite",
        "interval_seconds",
        "crontab",
        "is_enabled",
        "origin",
        "last_tick_at",
    ]
    list_filter = ["is_enabled", "origin"]
    list_select_related = ["model_version__model__agency", "suite"]
    fields = [
        "model_version",
        "suite",
        "interval_seconds",
        "crontab",
        "is_enabled",
        "origin",
        "created_by",
        "last_tick_at",
        "periodic_task",
    ]
    identity_fields = ("model_version", "suite")
    computed_fields = ("origin", "created_by", "last_tick_at", "periodic_task")
    update_fields = ("interval_seconds", "crontab", "is_enabled")
    inlines = [ScheduleTickInline]

    def has_add_permission(self, request) -> bool:
        return user_agency_id(request.user) is not None and not is_oversight(
            request.user
        )

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is None:
            return self.has_add_permission(request)
        return user_agency_id(request.user) == obj.model_version.model.agency_id

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "model_version":
            kwargs["queryset"] = ModelVersion.objects.visible_to(request.user).filter(
                model__agency_id=user_agency_id(request.user)
            )
        elif db_field.name == "suite":
            kwargs["queryset"] = EvaluationSuite.objects.visible_to(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def create(self, request, data):
        return schedule_create(
            actor=request.user,
            model_version=data["model_version"],
            suite=data["suite"],
            interval_seconds=data.get("interval_seconds"),
            crontab=data.get("crontab") or "",
            is_enabled=data.get("is_enabled", True),
        )

    def update(self, request, obj, changes):
        timing = {}
        if "interval_seconds" in changes or "crontab" in changes:
            # The service takes the pair as the form now holds it.
            timing = {
                "interval_seconds": changes.get(
                    "interval_seconds", obj.interval_seconds
                ),
                "crontab": changes.get("crontab", obj.crontab) or "",
            }
        if "is_enabled" in changes:
            timing["is_enabled"] = changes["is_enabled"]
        return schedule_update(actor=request.user, schedule=obj, **timing)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(_Record):
    """What MLflow is owed: pending, failing (``last_error``) and delivered."""

    list_display = [
        "id",
        "kind",
        "dedupe_key",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "remote_id",
    ]
    list_filter = ["kind", ("delivered_at", admin.EmptyFieldListFilter)]
    search_fields = ["dedupe_key", "remote_id"]
    fields = [
        "kind",
        "dedupe_key",
        "payload",
        "created_at",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "remote_id",
        "last_error",
    ]
    readonly_fields = fields
