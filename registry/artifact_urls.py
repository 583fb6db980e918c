"""Routes of the artifact endpoints, included under /api/v1/ by the registry API."""

from django.urls import path

from registry import artifact_api

urlpatterns = [
    path(
        "model-versions/<int:pk>/artifact/",
        artifact_api.ModelVersionArtifactView.as_view(),
        name="model-version-artifact",
    ),
    path(
        "model-versions/<int:pk>/artifact/reference/",
        artifact_api.ModelVersionArtifactReferenceView.as_view(),
        name="model-version-artifact-reference",
    ),
    path(
        "model-versions/<int:pk>/download/",
        artifact_api.ModelVersionDownloadView.as_view(),
        name="model-version-download",
    ),
    path(
        "dataset-versions/<int:pk>/file/",
        artifact_api.DatasetVersionFileView.as_view(),
        name="dataset-version-file",
    ),
    path(
        "dataset-versions/<int:pk>/file/reference/",
        artifact_api.DatasetVersionFileReferenceView.as_view(),
        name="dataset-version-file-reference",
    ),
    path(
        "dataset-versions/<int:pk>/download/",
        artifact_api.DatasetVersionDownloadView.as_view(),
        name="dataset-version-download",
    ),
]
