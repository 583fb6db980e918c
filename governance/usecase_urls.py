"""Routes of use cases, questionnaires, policies and policy results (/api/v1/)."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from governance import usecase_api

router = SimpleRouter()
router.register("use-cases", usecase_api.UseCaseViewSet, basename="use-case")
router.register(
    "questionnaires", usecase_api.QuestionnaireViewSet, basename="questionnaire"
)
router.register("policies", usecase_api.PolicyViewSet, basename="policy")
router.register(
    "policy-results", usecase_api.PolicyResultViewSet, basename="policy-result"
)

urlpatterns = [
    path(
        "policies/schema/",
        usecase_api.PolicySchemaView.as_view(),
        name="policy-schema",
    ),
    path("", include(router.urls)),
]
