"""Admin for evaluation suites and runs: read-only rows, a re-run action.

Runs are never edited by hand: the re-run action asks for a new evaluation
through ``governance.services``, so it is audited and queued like any other.
"""

from __future__ import annotations

from django.contrib import admin, messages

from config.exceptions import DomainError
from governance import services
from governance.models import EvaluationRun, EvaluationSuite, RunMetric


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(EvaluationSuite)
class EvaluationSuiteAdmin(_ReadOnly):
    list_display = ["name", "version", "licence", "agency", "created_at"]
    list_filter = ["agency"]
    search_fields = ["name", "description"]

    def get_queryset(self, request):
        return super().get_queryset(request).visible_to(request.user)


class RunMetricInline(admin.TabularInline):
    model = RunMetric
    fields = ["task", "name", "value"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(EvaluationRun)
class EvaluationRunAdmin(_ReadOnly):
    list_display = [
        "id",
        "model_version",
        "suite",
        "status",
        "progress",
        "requested_by",
        "requested_at",
        "finished_at",
        "failure_code",
    ]
    list_filter = ["status", "suite", "failure_code"]
    search_fields = ["model_version__model__name", "mlflow_run_id", "artifact_digest"]
    list_select_related = ["model_version__model__agency", "suite", "requested_by"]
    inlines = [RunMetricInline]
    actions = ["rerun"]

    def get_queryset(self, request):
        return super().get_queryset(request).visible_to(request.user)

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    @admin.action(description="Run again (a new evaluation of the same version)")
    def rerun(self, request, queryset):
        for run in queryset.select_related("model_version__model", "suite"):
            try:
                services.evaluation_request(
                    actor=request.user, model_version=run.model_version, suite=run.suite
                )
            except DomainError as exc:
                self.message_user(
                    request, f"Run {run.pk}: {exc.message}", messages.ERROR
                )
            else:
                self.message_user(request, f"Run {run.pk}: a new evaluation is queued.")
