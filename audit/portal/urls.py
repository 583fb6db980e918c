"""Portal routes of the audit app, mounted at the site root by config.urls."""

from django.urls import path  # noqa: F401

app_name = "audit_portal"

urlpatterns: list = []
