"""Portal routes of the governance app, mounted at the site root by config.urls."""

from django.urls import path

from governance.portal import (
    audit,
    compare,
    dashboard,
    derivations,
    evaluations,
    incidents,
    public,
    review,
    schedules,
    suites,
    use_cases,
    versions,
)

app_name = "governance_portal"

urlpatterns: list = [
    path("portal/suites/", suites.suite_list, name="suite-list"),
    path("portal/suites/new/", suites.suite_create, name="suite-create"),
    path("portal/suites/<int:pk>/", suites.suite_detail, name="suite-detail"),
    path("portal/suites/<int:pk>/edit/", suites.suite_edit, name="suite-edit"),
    path("portal/suites/<int:pk>/delete/", suites.suite_delete, name="suite-delete"),
    path(
        "portal/suites/<int:pk>/versions/new/",
        suites.suite_version_create,
        name="suite-version-create",
    ),
    path("portal/schedules/", schedules.schedule_list, name="schedule-list"),
    path("portal/schedules/new/", schedules.schedule_new, name="schedule-create"),
    path(
        "portal/schedules/<int:pk>/", schedules.schedule_detail, name="schedule-detail"
    ),
    path(
        "portal/schedules/<int:pk>/edit/", schedules.schedule_edit, name="schedule-edit"
    ),
    path(
        "portal/schedules/<int:pk>/toggle/",
        schedules.schedule_toggle,
        name="schedule-toggle",
    ),
    # Reviewers of the oversight body (docs/portal/oversight.md).
    path("portal/review/", review.ReviewQueueView.as_view(), name="review_queue"),
    path("portal/review/<int:pk>/", review.ReviewView.as_view(), name="review"),
    path("portal/use-cases/", review.UseCaseListView.as_view(), name="use_cases"),
    # Auditors. The views read the chain by the reader's agency, which the
    # audit leaf cannot import, so they live here as governance/api/audit.py.
    path("portal/audit/", audit.AuditHomeView.as_view(), name="audit"),
    path(
        "portal/audit/objects/<str:object_type>/<str:object_id>/",
        audit.AuditObjectView.as_view(),
        name="audit_object",
    ),
    path("portal/audit/export/", audit.AuditExportView.as_view(), name="audit_export"),
    path("portal/versions/<int:pk>/", versions.version_detail, name="version_detail"),
    path(
        "portal/versions/<int:pk>/derive/",
        derivations.version_derive_view,
        name="version-derive",
    ),
    # The agency dashboard, evaluations, use cases and comparisons
    # (docs/portal/agency.md).
    path("portal/", dashboard.dashboard, name="dashboard"),
    path("portal/dashboard/runs/", dashboard.dashboard_runs, name="dashboard-runs"),
    path(
        "portal/versions/<int:pk>/evaluate/",
        evaluations.evaluation_request_view,
        name="evaluation-request",
    ),
    path("portal/evaluations/", evaluations.evaluation_list, name="evaluation-list"),
    path(
        "portal/evaluations/<int:pk>/",
        evaluations.evaluation_detail,
        name="evaluation-detail",
    ),
    path(
        "portal/evaluations/<int:pk>/live/",
        evaluations.evaluation_live,
        name="evaluation-live",
    ),
    path(
        "portal/evaluations/<int:pk>/cancel/",
        evaluations.evaluation_cancel_view,
        name="evaluation-cancel",
    ),
    path("portal/use-cases/mine/", use_cases.use_case_list, name="my-use-case-list"),
    path(
        "portal/use-cases/mine/new/",
        use_cases.use_case_create_view,
        name="my-use-case-create",
    ),
    path(
        "portal/use-cases/mine/<int:pk>/",
        use_cases.use_case_detail,
        name="my-use-case-detail",
    ),
    path(
        "portal/use-cases/mine/<int:pk>/edit/",
        use_cases.use_case_edit,
        name="my-use-case-edit",
    ),
    path(
        "portal/use-cases/mine/<int:pk>/assessment/",
        use_cases.use_case_assessment,
        name="my-use-case-assessment",
    ),
    path(
        "portal/use-cases/mine/<int:pk>/submit/",
        use_cases.use_case_submit_view,
        name="my-use-case-submit",
    ),
    path("portal/compare/", compare.compare, name="compare"),
    # The public register (its list is the site's home: ``public.urlpatterns``).
    path("register/<int:pk>/", public.register_entry, name="register-entry"),
    path(
        "register/<int:pk>/report/",
        public.incident_report_create,
        name="register-report",
    ),
    path("register.csv", public.register_csv, name="register-csv"),
    path(
        "register/<int:pk>/transparency-record.<str:kind>",
        public.register_entry_transparency_record,
        name="register-transparency-record",
    ),
    # Oversight: citizens' incident reports.
    path("portal/incidents/", incidents.incident_list, name="incident-list"),
    path(
        "portal/incidents/<int:pk>/",
        incidents.incident_detail,
        name="incident-detail",
    ),
]
