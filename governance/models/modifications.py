"""Modification assessments: how a derived model version differs from its base."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from registry.models import ModelVersion


class ModificationClass(models.TextChoices):
    """What kind of change a derived version is, most substantial first."""

    ARCHITECTURE_CHANGE = "architecture_change", _("Architecture change")
    TOKENIZER_CHANGE = "tokenizer_change", _("Tokenizer change")
    QUANTISATION = "quantisation", _("Quantisation")
    FINE_TUNE = "fine_tune", _("Same-architecture fine-tune")
    UNCHANGED = "unchanged", _("Unchanged")


class AssessmentStatus(models.TextChoices):
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")


class ModificationAssessmentQuerySet(models.QuerySet):
    def visible_to(self, user):
        """An assessment follows the visibility of its (derived) model version."""
        return self.filter(
            model_version__in=ModelVersion.objects.visible_to(user).values("pk")
        )

    def current_for(self, version: ModelVersion):
        """The newest assessment against the version's current base and digest."""
        if version.base_version_id is None:
            return None
        return (
            self.filter(
                model_version_id=version.pk,
                base_version_id=version.base_version_id,
                artifact_digest=version.artifact_digest,
            )
            .order_by("-created_at", "-pk")
            .first()
        )


class ModificationAssessment(models.Model):
    """The comparison of a released model version with its base version.

    Written once by ``governance.services.modifications`` (from
    ``engine.compare``, run in the sandbox) for one pair of artifact digests,
    never updated or deleted. ``classes`` lists every class that holds, in
    ``engine.compare.PRECEDENCE`` order; ``primary`` is the first. A
    comparison that could not run is kept ``failed`` with ``error_code``.
    ``evaluation_deltas`` are the metric deltas known when it was written;
    policies read fresh runs instead.
    """

    model_version = models.ForeignKey(
        "registry.ModelVersion",
        on_delete=models.PROTECT,
        related_name="modification_assessments",
    )
    base_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    artifact_digest = models.CharField(max_length=64)
    base_artifact_digest = models.CharField(max_length=64)
    status = models.CharField(max_length=20, choices=AssessmentStatus.choices)
    primary = models.CharField(
        max_length=30, choices=ModificationClass.choices, blank=True
    )
    classes = models.JSONField(default=list)
    reasons = models.JSONField(default=dict)
    max_relative_change = models.FloatField(null=True, blank=True)
    overall_relative_change = models.FloatField(null=True, blank=True)
    graph = models.JSONField(default=dict)
    weights = models.JSONField(default=dict)
    tokenizer = models.JSONField(default=dict)
    evaluation_deltas = models.JSONField(default=list)
    error_code = models.CharField(max_length=60, blank=True)
    error = models.TextField(blank=True)
    compare_version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ModificationAssessmentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "model_version",
                    "base_version",
                    "artifact_digest",
                    "base_artifact_digest",
                ],
                name="modification_assessment_unique",
            )
        ]

    def __str__(self) -> str:
        what = self.primary or self.status
        return (
            f"modification of {self.model_version_id} "
            f"from {self.base_version_id}: {what}"
        )
