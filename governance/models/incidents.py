"""Citizens' incident reports on entries of the public transparency register."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models.decisions import Decision
from governance.models.use_cases import UseCase
from registry.selectors import is_oversight, user_agency_id


class IncidentStatus(models.TextChoices):
    NEW = "new", "New"
    TRIAGED = "triaged", "Triaged"
    DISMISSED = "dismissed", "Dismissed"
    ACTIONED = "actioned", "Actioned"


class IncidentReportQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Oversight reads every report; an agency's staff those on its use cases."""
        if is_oversight(user):
            return self
        return self.filter(use_case__agency_id=user_agency_id(user))


class IncidentReport(models.Model):
    """What a member of the public says went wrong with a use case in the register.

    Filed without an account (``services.incidents.incident_report_file``);
    ``model_version`` is the version the use case named when it was filed.
    ``contact_email`` is optional and shown to oversight reviewers only, never
    publicly. ``status`` moves new → triaged | dismissed | actioned, and
    triaged → dismissed | actioned, only through
    ``services.incidents.incident_report_triage``; ``decision`` is the
    suspension the report led to, if any.
    """

    use_case = models.ForeignKey(
        UseCase, on_delete=models.PROTECT, related_name="incident_reports"
    )
    model_version = models.ForeignKey(
        "registry.ModelVersion",
        on_delete=models.PROTECT,
        related_name="incident_reports",
    )
    what_happened = models.TextField()
    occurred_on = models.DateField()
    contact_email = models.EmailField(blank=True)
    status = models.CharField(
        max_length=20, choices=IncidentStatus.choices, default=IncidentStatus.NEW
    )
    triage_note = models.TextField(blank=True)
    triaged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    triaged_at = models.DateTimeField(null=True, blank=True)
    decision = models.ForeignKey(
        Decision,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="incident_reports",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = IncidentReportQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="incident_status_at"),
            models.Index(fields=["use_case", "status"], name="incident_use_case"),
        ]

    def __str__(self) -> str:
        return f"incident report {self.pk} on use case {self.use_case_id}"
