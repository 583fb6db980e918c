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
