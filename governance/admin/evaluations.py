"""Suites and evaluation runs in the admin."""

from __future__ import annotations

from django.contrib import admin, messages

from config.admin import ReadOnlyAdmin, ReadOnlyInline
from config.exceptions import DomainError
from governance.models import (
    EvaluationRun,
    EvaluationSuite,
    RunMetric,
)
from governance.services.evaluations import evaluation_request
from governance.services.suites import (
    SUITE_WRITER_ROLES,
    suite_delete,
    suite_register,
    suite_update,
)
from registry.admin.base import ServiceAdmin, ServiceForm
from registry.models import DatasetVersion
from registry.selectors import user_agency_id, user_role

# --- Evaluations --------------------------------------------------------------
# Read-only rows; the re-run action asks for a new evaluation through
# governance.services.evaluations, so it is audited and queued like any other.


class EvaluationSuiteForm(ServiceForm):
    """An agency suite; ``tasks`` as the API takes them (dataset version ids)."""

    class Meta:
        model = EvaluationSuite
        fields = [
            "name",
            "version",
            "description",
            "licence",
            "visibility",
            "tasks",
            "metrics",
            "thresholds",
        ]
        help_texts = {
            "tasks": 'A JSON list: [{"task": "generation", "name": "answers", '
            '"dataset_version": 41, "options": {}}].',
        }


def _tasks_with_versions(tasks) -> list[dict]:
    """Admin input tasks with each ``dataset_version`` id loaded as a row."""
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise DomainError(
            "Give the tasks as a JSON list of objects.",
            code="invalid",
            fields={"tasks": ["Give the tasks as a JSON list of objects."]},
        )
    pks = [t.get("dataset_version") for t in tasks]
    found = DatasetVersion.objects.in_bulk([pk for pk in pks if isinstance(pk, int)])
    missing = [pk for pk in pks if not isinstance(pk, int) or pk not in found]
    if missing:
        message = f"No dataset version {missing[0]!r}."
        raise DomainError(message, code="does_not_exist", fields={"tasks": [message]})
    return [{**t, "dataset_version": found[t["dataset_version"]]} for t in tasks]


@admin.register(EvaluationSuite)
class EvaluationSuiteAdmin(ServiceAdmin):
    """Agencies register suites here too; a suite a run used is read-only."""

    form = EvaluationSuiteForm
    list_display = [
        "name",
        "version",
        "licence",
        "agency",
        "visibility",
        "created_at",
    ]
    list_filter = ["agency", "visibility"]
    search_fields = ["name", "description"]
    update_fields = ("description", "visibility", "metrics", "thresholds")
    identity_fields = ("name", "version", "licence", "tasks")
    computed_fields = ("agency", "previous", "created_at")

    def get_queryset(self, request):
        return EvaluationSuite.objects.visible_to(request.user).select_related(
            "licence", "agency"
        )

    def has_add_permission(self, request) -> bool:
        return user_role(request.user) in SUITE_WRITER_ROLES

    def has_change_permission(self, request, obj=None) -> bool:
        user = request.user
        if user_role(user) not in SUITE_WRITER_ROLES:
            return False
        if obj is None:
            return True
        return (
            obj.agency_id is not None
            and obj.agency_id == user_agency_id(user)
            and not obj.runs.exists()
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return obj is not None and self.has_change_permission(request, obj)

    def create(self, request, data):
        return suite_register(
            actor=request.user,
            name=data["name"],
            version=data["version"],
            description=data.get("description", ""),
            licence=data["licence"],
            visibility=data["visibility"],
            tasks=_tasks_with_versions(data["tasks"]),
            metrics=data.get("metrics") or [],
            thresholds=data.get("thresholds") or {},
        )

    def update(self, request, obj, changes):
        return suite_update(actor=request.user, suite=obj, **changes)

    def delete_model(self, request, obj) -> None:
        suite_delete(actor=request.user, suite=obj)


class RunMetricInline(ReadOnlyInline):
    model = RunMetric
    fields = ["task", "name", "value"]


@admin.register(EvaluationRun)
class EvaluationRunAdmin(ReadOnlyAdmin):
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
                evaluation_request(
                    actor=request.user, model_version=run.model_version, suite=run.suite
                )
            except DomainError as exc:
                self.message_user(
                    request, f"Run {run.pk}: {exc.message}", messages.ERROR
                )
            else:
                self.message_user(request, f"Run {run.pk}: a new evaluation is queued.")
