"""The Celery application shared by web, worker and beat.

Configuration comes from Django settings (``CELERY_*``). django-structlog's
worker step carries the request id of the web request into every task it
queued, so both log lines share it.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import setup_logging
from django_structlog.celery.steps import DjangoStructLogInitStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("civitas")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.steps["worker"].add(DjangoStructLogInitStep)
app.autodiscover_tasks(["workers"])


@setup_logging.connect
def _configure_worker_logging(**kwargs) -> None:
    """Keep Celery from installing its own handlers: settings already did."""
    from django.conf import settings

    from config.logging import configure_logging

    configure_logging(level=settings.LOG_LEVEL, fmt=settings.LOG_FORMAT)


def send_on_commit(task_name: str, **kwargs) -> None:
    """Queue a task by its name once the current transaction commits.

    Services queue follow-up work with this: by name, because the apps must
    not import ``workers`` (imports point from workers to the apps), and on
    commit, so a rolled-back write queues nothing and the worker finds the
    committed row.
    """
    from django.db import transaction

    transaction.on_commit(lambda: app.send_task(task_name, kwargs=kwargs))
