"""Portal routes of the registry app, mounted at the site root by config.urls."""

from django.urls import path

from registry.portal import account, catalogue, datasets, uploads

app_name = "registry_portal"

urlpatterns: list = [
    path("portal/account/", account.AccountView.as_view(), name="account"),
    path("portal/models/", catalogue.model_list, name="model_list"),
    path("portal/models/new/", catalogue.model_create, name="model_create"),
    path("portal/models/<int:pk>/", catalogue.model_detail, name="model_detail"),
    path("portal/models/<int:pk>/edit/", catalogue.model_edit, name="model_edit"),
    path(
        "portal/models/<int:pk>/versions/new/",
        catalogue.version_create,
        name="version_create",
    ),
    path(
        "portal/versions/<int:pk>/artifact/",
        uploads.version_artifact,
        name="version_artifact",
    ),
    path(
        "portal/versions/<int:pk>/artifact/state/",
        uploads.version_artifact_status,
        name="version_artifact_status",
    ),
    path(
        "portal/versions/<int:pk>/datasets/",
        datasets.version_datasets,
        name="version_datasets",
    ),
    path("portal/datasets/", datasets.dataset_list, name="dataset_list"),
    path("portal/datasets/new/", datasets.dataset_create, name="dataset_create"),
    path("portal/datasets/<int:pk>/", datasets.dataset_detail, name="dataset_detail"),
    path(
        "portal/datasets/<int:pk>/versions/new/",
        datasets.dataset_version_create,
        name="dataset_version_create",
    ),
    path(
        "portal/dataset-versions/<int:pk>/",
        datasets.dataset_version_detail,
        name="dataset_version_detail",
    ),
]
