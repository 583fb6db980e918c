from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    """Stored answers to POSTs sent with an ``Idempotency-Key`` header (a leaf)."""

    name = "idempotency"
    verbose_name = "Idempotency keys"
    default_auto_field = "django.db.models.BigAutoField"
