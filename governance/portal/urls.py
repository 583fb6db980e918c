"""Portal routes of the governance app, mounted at the site root by config.urls."""

from django.urls import path  # noqa: F401

app_name = "governance_portal"

urlpatterns: list = []
