"""Routes of the audit chain API, included under ``/api/v1/audit/``."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from governance import audit_api

app_name = "audit"

router = SimpleRouter()
router.register("events", audit_api.AuditEventViewSet, basename="event")
router.register("checkpoints", audit_api.AuditCheckpointViewSet, basename="checkpoint")

urlpatterns = [
    path("verify/", audit_api.AuditVerifyView.as_view(), name="verify"),
    path("export/", audit_api.AuditExportView.as_view(), name="export"),
    path("public-key/", audit_api.AuditPublicKeyView.as_view(), name="public-key"),
    *router.urls,
]
