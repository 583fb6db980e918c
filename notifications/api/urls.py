"""Routes of the notifications API, included under /api/v1/ by ``config.urls``."""

from rest_framework.routers import SimpleRouter

from notifications.api import webhooks

router = SimpleRouter()
router.register("webhooks", webhooks.WebhookViewSet, basename="webhook")

urlpatterns = router.urls
