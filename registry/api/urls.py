"""Routes of the registry API, included under /api/v1/ by ``config.urls``."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from registry.api import agencies, artifacts, catalogue, lineage, tokens, uploads

router = SimpleRouter()
router.register("agencies", agencies.AgencyViewSet, basename="agency")
router.register("licences", catalogue.LicenceViewSet, basename="licence")
router.register("datasets", catalogue.DatasetViewSet, basename="dataset")
router.register(
    "dataset-versions", catalogue.DatasetVersionViewSet, basename="dataset-version"
)
router.register("models", catalogue.AIModelViewSet, basename="model")
router.register(
    "model-versions", catalogue.ModelVersionViewSet, basename="model-version"
)

members = agencies.MembershipViewSet.as_view({"get": "list", "post": "create"})
member = agencies.MembershipViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)

artifact_patterns = [
    path(
        "model-versions/<int:pk>/artifact/",
        artifacts.ModelVersionArtifactView.as_view(),
        name="model-version-artifact",
    ),
    path(
        "model-versions/<int:pk>/artifact/reference/",
        artifacts.ModelVersionArtifactReferenceView.as_view(),
        name="model-version-artifact-reference",
    ),
    path(
        "model-versions/<int:pk>/download/",
        artifacts.ModelVersionDownloadView.as_view(),
        name="model-version-download",
    ),
    path(
        "dataset-versions/<int:pk>/file/",
        artifacts.DatasetVersionFileView.as_view(),
        name="dataset-version-file",
    ),
    path(
        "dataset-versions/<int:pk>/file/reference/",
        artifacts.DatasetVersionFileReferenceView.as_view(),
        name="dataset-version-file-reference",
    ),
    path(
        "dataset-versions/<int:pk>/download/",
        artifacts.DatasetVersionDownloadView.as_view(),
        name="dataset-version-download",
    ),
]

_UPLOAD = "model-versions/<int:pk>/uploads/"
upload_patterns = [
    path(
        _UPLOAD,
        uploads.UploadSessionListView.as_view(),
        name="model-version-uploads",
    ),
    path(
        _UPLOAD + "<uuid:upload_id>/",
        uploads.UploadSessionDetailView.as_view(),
        name="model-version-upload-detail",
    ),
    path(
        _UPLOAD + "<uuid:upload_id>/parts/<int:number>/",
        uploads.UploadPartView.as_view(),
        name="model-version-upload-part",
    ),
    path(
        _UPLOAD + "<uuid:upload_id>/complete/",
        uploads.UploadCompleteView.as_view(),
        name="model-version-upload-complete",
    ),
]

lineage_patterns = [
    path(
        "model-versions/<int:pk>/lineage/",
        lineage.ModelVersionLineageView.as_view(),
        name="model-version-lineage",
    ),
    path(
        "dataset-versions/<int:pk>/lineage/",
        lineage.DatasetVersionLineageView.as_view(),
        name="dataset-version-lineage",
    ),
]

urlpatterns = [
    path("me/", agencies.MeView.as_view(), name="me"),
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
    *artifact_patterns,
    *upload_patterns,
    *lineage_patterns,
    path("", include(router.urls)),
]
