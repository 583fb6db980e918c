"""Routes of the use case lifecycle, decisions and attestations (/api/v1/)."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from governance import decision_api

router = SimpleRouter()
router.register("decisions", decision_api.DecisionViewSet, basename="decision")
router.register("submissions", decision_api.SubmissionViewSet, basename="submission")
router.register("waivers", decision_api.WaiverViewSet, basename="waiver")
router.register("attestations", decision_api.AttestationViewSet, basename="attestation")

_TRANSITIONS = [
    ("submit", decision_api.UseCaseSubmitView),
    ("start-review", decision_api.UseCaseStartReviewView),
    ("approve", decision_api.UseCaseApproveView),
    ("reject", decision_api.UseCaseRejectView),
    ("request-changes", decision_api.UseCaseRequestChangesView),
    ("suspend", decision_api.UseCaseSuspendView),
    ("reinstate", decision_api.UseCaseReinstateView),
    ("retire", decision_api.UseCaseRetireView),
]

urlpatterns = [
    *(
        path(f"use-cases/<int:pk>/{name}/", view.as_view(), name=f"use-case-{name}")
        for name, view in _TRANSITIONS
    ),
    path(
        "use-cases/<int:pk>/history/",
        decision_api.UseCaseHistoryView.as_view(),
        name="use-case-history",
    ),
    path(
        "evaluations/<int:pk>/attestation/",
        decision_api.EvaluationAttestationView.as_view(),
        name="evaluation-attestation",
    ),
    path("in-service/", decision_api.InServiceView.as_view(), name="in-service"),
    path("", include(router.urls)),
]
