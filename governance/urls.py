"""Routes of the governance API, included under /api/v1/."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from governance import views

router = SimpleRouter()
router.register("suites", views.EvaluationSuiteViewSet, basename="suite")
router.register("evaluations", views.EvaluationRunViewSet, basename="evaluation")

urlpatterns = [
    path(
        "model-versions/<int:pk>/evaluations/",
        views.ModelVersionEvaluationsView.as_view(),
        name="model-version-evaluations",
    ),
    path("", include(router.urls)),
    path("", include("governance.usecase_urls")),
    path("", include("governance.decision_urls")),
]
