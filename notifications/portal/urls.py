"""Portal routes of the notifications app, mounted at the site root by config.urls."""

from django.urls import path  # noqa: F401

app_name = "notifications_portal"

urlpatterns: list = []
