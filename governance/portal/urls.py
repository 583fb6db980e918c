"""Portal routes of the governance app, mounted at the site root by config.urls."""

from django.urls import path

from governance.portal import versions

app_name = "governance_portal"

urlpatterns: list = [
    path("portal/versions/<int:pk>/", versions.version_detail, name="version_detail"),
]
