"""The outbox: what the platform owes MLflow, written with the change that owes it."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class OutboxKind(models.TextChoices):
    """What a message asks MLflow to record; each kind has one delivery handler."""

    EVALUATION_RUN = "mlflow.evaluation_run", "Evaluation run"
    MODEL_VERSION = "mlflow.model_version", "Registered model version"
    DATASET_VERSION = "mlflow.dataset_version", "Dataset version"
    DECISION = "mlflow.decision", "Decision tag"


class OutboxMessage(models.Model):
    """One delivery owed to MLflow, written in the transaction that owes it.

    Invariants: ``dedupe_key`` is unique, so the same debt is written once;
    a message is delivered at most once in effect (the handler finds what an
    earlier attempt created by the key before creating anything); a delivered
    message keeps ``delivered_at`` and ``remote_id`` (the MLflow id). An
    undelivered message is due at ``next_attempt_at``; each failed attempt
    pushes it back exponentially and keeps the error in ``last_error``.
    """

    kind = models.CharField(max_length=64, choices=OutboxKind.choices)
    payload = models.JSONField()
    dedupe_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    remote_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=models.Q(delivered_at__isnull=True),
                name="outbox_pending_idx",
            )
        ]

    def __str__(self) -> str:
        state = "delivered" if self.delivered_at else f"pending ({self.attempts})"
        return f"{self.kind} {self.dedupe_key} {state}"
