"""Root URL configuration."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import health, views

admin.site.site_header = "Civitas administration"
admin.site.site_title = "Civitas"
admin.site.index_title = "Registry and governance of public-sector language models"

api_v1 = [
    path("", include("governance.api.urls")),
    path("", include("registry.urls")),
    path("system/worker-ping/", views.WorkerPingView.as_view(), name="worker-ping"),
    path(
        "system/worker-ping/<str:task_id>/",
        views.WorkerPingResultView.as_view(),
        name="worker-ping-result",
    ),
    path("audit/", include("governance.audit_urls")),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False), name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
