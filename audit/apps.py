from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The hash-chained audit log, its signed checkpoints and the security events."""

    name = "audit"
    verbose_name = "Audit"
