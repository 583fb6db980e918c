"""Structured logging for web, worker and beat processes.

Every line is one JSON object (or a readable console line with
``LOG_FORMAT=console``) carrying the request id bound by django-structlog, so a
request and the Celery tasks it queued can be followed across processes.
"""

from __future__ import annotations

import logging.config

import structlog


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    """Configure the standard library and structlog to render through one handler."""
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=True)
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        renderer,
                    ],
                    "foreign_pre_chain": shared,
                }
            },
            "handlers": {
                "stderr": {"class": "logging.StreamHandler", "formatter": "structured"}
            },
            "root": {"handlers": ["stderr"], "level": level},
            "loggers": {
                # Django's own per-request line would duplicate request_finished.
                "django.server": {"level": "WARNING"},
                "django.request": {"level": "ERROR"},
                # Celery's plain-text task lines duplicate django-structlog's.
                "celery.app.trace": {"level": "WARNING"},
                "celery.worker.strategy": {"level": "WARNING"},
                "gunicorn.access": {"level": "WARNING"},
                "alembic": {"level": "WARNING"},
            },
        }
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.filter_by_level,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
