"""Portal routes of the notifications app, mounted at the site root by config.urls."""

from django.urls import path

from notifications.portal import webhooks

app_name = "notifications_portal"

urlpatterns: list = [
    path("portal/webhooks/", webhooks.webhook_list, name="webhook-list"),
    path("portal/webhooks/new/", webhooks.webhook_create, name="webhook-create"),
    path("portal/webhooks/<int:pk>/", webhooks.webhook_detail, name="webhook-detail"),
    path("portal/webhooks/<int:pk>/edit/", webhooks.webhook_edit, name="webhook-edit"),
    path(
        "portal/webhooks/<int:pk>/toggle/",
        webhooks.webhook_toggle,
        name="webhook-toggle",
    ),
    path(
        "portal/webhooks/<int:pk>/rotate-secret/",
        webhooks.webhook_rotate,
        name="webhook-rotate",
    ),
    path("portal/webhooks/<int:pk>/ping/", webhooks.webhook_ping, name="webhook-ping"),
]
