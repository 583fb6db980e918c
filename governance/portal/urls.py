"""Portal routes of the governance app, mounted at the site root by config.urls."""

from django.urls import path

from governance.portal import compare, dashboard, evaluations, use_cases

app_name = "governance_portal"

urlpatterns: list = [
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
]
