"""Routes of the lineage API, included under /api/v1/ by ``registry.urls``."""

from django.urls import path

from registry import lineage_api

urlpatterns = [
    path(
        "model-versions/<int:pk>/lineage/",
        lineage_api.ModelVersionLineageView.as_view(),
        name="model-version-lineage",
    ),
    path(
        "dataset-versions/<int:pk>/lineage/",
        lineage_api.DatasetVersionLineageView.as_view(),
        name="dataset-version-lineage",
    ),
]
