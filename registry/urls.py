"""Routes of the catalogue API, included under /api/v1/."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from registry import tokens, views

router = SimpleRouter()
router.register("agencies", views.AgencyViewSet, basename="agency")
router.register("licences", views.LicenceViewSet, basename="licence")
router.register("datasets", views.DatasetViewSet, basename="dataset")
router.register(
    "dataset-versions", views.DatasetVersionViewSet, basename="dataset-version"
)
router.register("models", views.AIModelViewSet, basename="model")
router.register("model-versions", views.ModelVersionViewSet, basename="model-version")

members = views.MembershipViewSet.as_view({"get": "list", "post": "create"})
member = views.MembershipViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("auth/tokens/", tokens.TokenListCreateView.as_view(), name="token-list"),
    path(
        "auth/tokens/<str:token_key>/",
        tokens.TokenRevokeView.as_view(),
        name="token-detail",
    ),
    path("agencies/<slug:agency_slug>/members/", members, name="membership-list"),
    path(
        "agencies/<slug:agency_slug>/members/<str:username>/",
        member,
        name="membership-detail",
    ),
    path("", include("registry.artifact_urls")),
    path("", include("registry.lineage_urls")),
    path("", include(router.urls)),
]
