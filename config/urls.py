"""Root URL configuration.

Every URL under /api/v1/ is mounted from its app's ``api/urls.py``. An
unknown URL (or an unhandled error) under /api/ answers in the API's JSON
error shape, never Django's HTML page.
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import JsonResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import authentication, health, metrics, views

admin.site.site_header = "Civitas administration"
admin.site.site_title = "Civitas"
admin.site.index_title = "Registry and governance of public-sector language models"

api_v1 = [
    path("", include("governance.api.urls")),
    path("", include("registry.api.urls")),
    path("", include("notifications.api.urls")),
    path("system/worker-ping/", views.WorkerPingView.as_view(), name="worker-ping"),
    path(
        "system/worker-ping/<str:task_id>/",
        views.WorkerPingResultView.as_view(),
        name="worker-ping-result",
    ),
]

urlpatterns = [
    # The public transparency register is the home page (name ``home``).
    path("", include("governance.portal.public")),
    # The portal: pages for agency staff, reviewers, auditors and the public,
    # each app's own (``<app>/portal/``), calling the same services and
    # selectors as the API.
    path("", include("governance.portal.urls")),
    path("", include("registry.portal.urls")),
    path("", include("audit.portal.urls")),
    path("", include("notifications.portal.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("accounts/login/", authentication.SignInView.as_view(), name="login"),
    # Single sign-on (mozilla-django-oidc; views in registry.sso, 404 when off).
    path("accounts/oidc/", include("mozilla_django_oidc.urls")),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    # The one-time set-password link of an invitation (registry.accounts).
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def not_found(request, exception=None):
    """404: the API's error shape under /api/, Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse({"code": "not_found", "message": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """500: the API's error shape under /api/, Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse(
            {"code": "server_error", "message": "A server error occurred."},
            status=500,
        )
    return defaults.server_error(request)


handler404 = not_found
handler500 = server_error
