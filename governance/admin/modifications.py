"""Modification assessments in the admin: read only, written by the service."""

from __future__ import annotations

from django.contrib import admin

from config.admin import ReadOnlyAdmin
from governance.models import ModificationAssessment


@admin.register(ModificationAssessment)
class ModificationAssessmentAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "model_version",
        "base_version",
        "status",
        "primary",
        "max_relative_change",
        "created_at",
    ]
    list_filter = ["status", "primary"]
    search_fields = ["model_version__model__name", "artifact_digest"]
    list_select_related = [
        "model_version__model__agency",
        "base_version__model__agency",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).visible_to(request.user)

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff
