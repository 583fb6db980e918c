from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from audit.signals import announce_when, event_recorded
        from notifications import events, services

        announce_when(events.notifies)
        event_recorded.connect(
            services.on_event_recorded, dispatch_uid="notifications.on_event_recorded"
        )
        self._register_metrics()

    @staticmethod
    def _register_metrics() -> None:
        """Failed webhook deliveries on ``/metrics``, per agency."""
        from config.metrics import register_gauge
        from notifications.selectors import webhook_failures

        register_gauge(
            "civitas_webhook_deliveries_failed",
            "Webhook deliveries given up after their last attempt, per agency",
            lambda: [({"agency": slug}, n) for slug, n in webhook_failures().items()],
        )
