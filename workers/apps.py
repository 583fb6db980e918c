from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """Celery tasks (thin) and the pure-Python evaluation engine."""

    name = "workers"
    verbose_name = "Workers"
