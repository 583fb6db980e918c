"""Use cases, their risk questionnaires and statuses."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from registry.selectors import is_oversight, user_agency_id


class RiskTier(models.TextChoices):
    """Risk tiers in the sense of the EU AI Act, lowest first."""

    MINIMAL = "minimal", "Minimal risk"
    LIMITED = "limited", "Limited risk (transparency duties)"
    HIGH = "high", "High risk"
    PROHIBITED = "prohibited", "Prohibited practice"


class Questionnaire(models.Model):
    """A published version of an impact questionnaire (``governance.risk``).

    ``definition`` holds the questions with weighted answers, the score
    thresholds and the triggers, exactly as shipped in
    ``governance/questionnaires/<name>-<version>.json``. Never changed: a new
    question or weight is a new version, so stored answers keep their meaning.
    """

    name = models.SlugField(max_length=80)
    version = models.CharField(max_length=32)
    title = models.CharField(max_length=300)
    definition = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "version"], name="questionnaire_version_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class UseCaseStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted"
    IN_REVIEW = "in_review", "In review"
    APPROVED = "approved", "Approved"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    REJECTED = "rejected", "Rejected"
    SUSPENDED = "suspended", "Suspended"
    RETIRED = "retired", "Retired"
    EXPIRED = "expired", "Expired"


# The only states in which an agency may change what its use case says.
EDITABLE_USE_CASE_STATUSES = frozenset(
    {UseCaseStatus.DRAFT, UseCaseStatus.CHANGES_REQUESTED}
)


class UseCaseQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Oversight sees every use case; others their own agency's."""
        if is_oversight(user):
            return self
        return self.filter(agency_id=user_agency_id(user))


class UseCase(models.Model):
    """An agency's use of one model version for a stated public purpose.

    Approval is given to a use case, not to a model: the same version may be
    approved for one purpose and refused for another. The content is edited
    only while ``draft`` or ``changes_requested``; ``status`` moves only
    through the lifecycle services. ``risk_tier``, ``risk_score``,
    ``questionnaire`` and ``answers`` are set together by an assessment (all
    empty before it); the answers stay as evidence for the tier.
    """

    agency = models.ForeignKey(
        "registry.Agency", on_delete=models.PROTECT, related_name="use_cases"
    )
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="use_cases"
    )
    title = models.CharField(max_length=200)
    purpose = models.TextField(help_text="What the model is used for, and why.")
    public_service = models.CharField(
        max_length=300, help_text="The public service the use belongs to."
    )
    affected_people = models.TextField(
        blank=True, help_text="Who is affected by the outputs."
    )
    decision_informed = models.TextField(
        blank=True, help_text="The decision the outputs inform, or 'none'."
    )
    human_oversight = models.TextField(
        blank=True, help_text="Who checks the outputs, when, and with what authority."
    )
    valid_until = models.DateField(help_text="The last day the use may run.")
    status = models.CharField(
        max_length=20, choices=UseCaseStatus.choices, default=UseCaseStatus.DRAFT
    )
    # NULL, not "", means "not assessed": the all-or-nothing constraint below
    # reads it together with the score and the questionnaire.
    risk_tier = models.CharField(  # noqa: DJ001
        max_length=20, choices=RiskTier.choices, null=True, blank=True
    )
    risk_score = models.PositiveIntegerField(null=True, blank=True)
    questionnaire = models.ForeignKey(
        Questionnaire,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="use_cases",
    )
    answers = models.JSONField(default=dict, blank=True)
    risk_reasons = models.JSONField(default=list, blank=True)
    assessed_at = models.DateTimeField(null=True, blank=True)
    assessed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = UseCaseQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["agency", "status"], name="use_case_agency_status"),
            models.Index(fields=["model_version", "status"], name="use_case_mv_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(
                        risk_tier__isnull=True,
                        risk_score__isnull=True,
                        questionnaire__isnull=True,
                    )
                    | Q(
                        risk_tier__isnull=False,
                        risk_score__isnull=False,
                        questionnaire__isnull=False,
                    )
                ),
                name="use_case_assessment_all_or_nothing",
            )
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.agency_id}, {self.status})"

    @property
    def is_editable(self) -> bool:
        """Content may change only while a draft or sent back for changes."""
        return self.status in EDITABLE_USE_CASE_STATUSES
