"""Evaluation schedules, their ticks, and what each scheduled run compared."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from registry.selectors import is_oversight, user_agency_id


class ScheduleOrigin(models.TextChoices):
    """Who wanted the schedule: an agency, or a policy needing fresh evidence."""

    AGENCY = "agency", "Set by the agency"
    POLICY = "policy", "Kept by the platform for a freshness limit"


class EvaluationScheduleQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Oversight reads every schedule; an agency its own versions' schedules."""
        if is_oversight(user):
            return self
        return self.filter(model_version__model__agency_id=user_agency_id(user))


class EvaluationSchedule(models.Model):
    """A model version evaluated on a suite at an interval or on a crontab.

    Exactly one of ``interval_seconds`` and ``crontab`` (five cron fields, in
    ``CELERY_TIMEZONE``) is set. ``periodic_task`` is the django-celery-beat
    row that fires ``civitas.schedule_tick``; only
    ``governance.services.schedules`` writes either, keeping both in step. A
    schedule is never deleted (its ticks are evidence): it is disabled.
    ``last_tick_at`` is when the last tick queued a run; a tick arriving
    before half a period has passed is the same slot again and is skipped.
    """

    model_version = models.ForeignKey(
        "registry.ModelVersion",
        on_delete=models.PROTECT,
        related_name="evaluation_schedules",
    )
    suite = models.ForeignKey(
        "governance.EvaluationSuite", on_delete=models.PROTECT, related_name="+"
    )
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    crontab = models.CharField(max_length=120, blank=True)
    is_enabled = models.BooleanField(default=True)
    origin = models.CharField(
        max_length=20, choices=ScheduleOrigin.choices, default=ScheduleOrigin.AGENCY
    )
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_tick_at = models.DateTimeField(null=True, blank=True)

    objects = EvaluationScheduleQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(interval_seconds__isnull=False) & Q(crontab=""))
                | (Q(interval_seconds__isnull=True) & ~Q(crontab="")),
                name="schedule_interval_xor_crontab",
            ),
            models.UniqueConstraint(
                fields=["model_version", "suite"],
                condition=Q(origin="policy"),
                name="schedule_one_policy_schedule",
            ),
        ]

    def __str__(self) -> str:
        every = (
            f"every {self.interval_seconds}s"
            if self.interval_seconds
            else f"cron {self.crontab}"
        )
        return f"schedule {self.pk}: {self.model_version_id} on {self.suite_id} {every}"

    @property
    def agency_id(self) -> int:
        """The agency that owns the version (and so the schedule)."""
        return self.model_version.model.agency_id


class TickOutcome(models.TextChoices):
    QUEUED = "queued", "A run was queued"
    SKIPPED_BUSY = "skipped_busy", "Skipped: a run of this schedule is unfinished"
    SKIPPED_SAME_SLOT = "skipped_same_slot", "Skipped: this slot already ran"
    REFUSED = "refused", "Refused by the evaluation service"


class Comparison(models.TextChoices):
    """How a scheduled run compared with the version's previous run on the suite."""

    PENDING = "pending", "Not compared yet"
    NOT_COMPARED = "not_compared", "Nothing to compare (no run, or it failed)"
    NO_BASELINE = "no_baseline", "First run on this suite"
    IDENTICAL = "identical", "Identical metrics"
    WITHIN_TOLERANCE = "within_tolerance", "Within tolerance (another processor)"
    ENGINE_CHANGED = "engine_changed", "Another engine or artifact: not comparable"
    REPRODUCIBILITY_FAILED = "reproducibility_failed", "Reproducibility failure"


class ScheduleTick(models.Model):
    """One tick of a schedule: the run it queued or why it queued none.

    The run history of a schedule. Once the run finished, ``comparison``
    says how it compared with ``baseline_run`` (the version's previous
    succeeded run on the suite); ``detail`` holds the processor model and
    instruction-set features of both, the metrics that differed, and the
    regressions (metrics past a policy bound) found. Written only by
    ``governance.services.schedules``.
    """

    schedule = models.ForeignKey(
        EvaluationSchedule, on_delete=models.PROTECT, related_name="ticks"
    )
    ticked_at = models.DateTimeField()
    outcome = models.CharField(max_length=30, choices=TickOutcome.choices)
    reason = models.TextField(blank=True)
    run = models.OneToOneField(
        "governance.EvaluationRun",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="schedule_tick",
    )
    comparison = models.CharField(
        max_length=30, choices=Comparison.choices, default=Comparison.NOT_COMPARED
    )
    baseline_run = models.ForeignKey(
        "governance.EvaluationRun",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    detail = models.JSONField(default=dict, blank=True)
    compared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-ticked_at", "-id"]
        indexes = [models.Index(fields=["comparison"], name="schedule_tick_cmp")]

    def __str__(self) -> str:
        return f"tick {self.pk} of schedule {self.schedule_id}: {self.outcome}"
