from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """Celery tasks only (workers/tasks.py): thin glue between queue and apps."""

    name = "workers"
    verbose_name = "Workers"
