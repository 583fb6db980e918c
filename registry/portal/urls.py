"""Portal routes of the registry app, mounted at the site root by config.urls."""

from django.urls import path  # noqa: F401

app_name = "registry_portal"

urlpatterns: list = []
