"""Portal routes of the governance app, mounted at the site root by config.urls."""

from django.urls import path

from governance.portal import audit, review

app_name = "governance_portal"

urlpatterns: list = [
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
]
