"""Admin of use cases, questionnaires, policies and policy results: read-only.

Every write goes through ``governance.usecase_services`` (API or portal), so
the audit chain sees it; questionnaires, policy versions and policy results
are immutable anyway (database triggers refuse UPDATE and DELETE).
"""

from __future__ import annotations

from django.contrib import admin

from governance.models import Policy, PolicyResult, Questionnaire, UseCase


class _ReadOnly(admin.ModelAdmin):
    """No add, change or delete in the admin: the services own these writes."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Questionnaire)
class QuestionnaireAdmin(_ReadOnly):
    list_display = ["name", "version", "title", "created_at"]
    search_fields = ["name", "title"]
    fields = ["name", "version", "title", "definition", "created_at"]
    readonly_fields = fields


class PolicyResultInline(admin.TabularInline):
    """The verdicts on a use case, newest first, beside its content."""

    model = PolicyResult
    fields = ["id", "created_at", "trigger", "passed", "artifact_digest"]
    readonly_fields = fields
    ordering = ["-created_at"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UseCase)
class UseCaseAdmin(_ReadOnly):
    list_display = [
        "title",
        "agency",
        "model_version",
        "status",
        "risk_tier",
        "risk_score",
        "valid_until",
    ]
    list_filter = ["status", "risk_tier", "agency"]
    list_select_related = ["agency", "model_version__model__agency"]
    search_fields = ["title", "purpose", "public_service"]
    fields = [
        "agency",
        "model_version",
        "title",
        "purpose",
        "public_service",
        "affected_people",
        "decision_informed",
        "human_oversight",
        "valid_until",
        "status",
        "risk_tier",
        "risk_score",
        "questionnaire",
        "answers",
        "risk_reasons",
        "assessed_at",
        "assessed_by",
        "created_by",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    inlines = [PolicyResultInline]


@admin.register(Policy)
class PolicyAdmin(_ReadOnly):
    list_display = [
        "name",
        "version",
        "title",
        "scope",
        "agency",
        "risk_tier",
        "is_active",
    ]
    list_filter = ["scope", "risk_tier", "is_active"]
    list_select_related = ["agency"]
    search_fields = ["name", "title"]
    fields = [
        "name",
        "version",
        "title",
        "description",
        "scope",
        "agency",
        "risk_tier",
        "rules",
        "is_active",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields


@admin.register(PolicyResult)
class PolicyResultAdmin(_ReadOnly):
    list_display = [
        "id",
        "use_case",
        "model_version",
        "trigger",
        "passed",
        "created_at",
    ]
    list_filter = ["passed", "trigger", "risk_tier"]
    list_select_related = ["use_case", "model_version__model__agency"]
    fields = [
        "use_case",
        "model_version",
        "artifact_digest",
        "risk_tier",
        "trigger",
        "passed",
        "policies",
        "outcomes",
        "requested_by",
        "created_at",
    ]
    readonly_fields = fields
