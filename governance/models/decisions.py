"""Submissions, transitions, waivers, decisions and attestations."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from governance.models.evaluations import EvaluationRun
from governance.models.policies import PolicyResult
from governance.models.use_cases import UseCase, UseCaseStatus

# --- Decisions and attestations ---------------------------------------------------
# Written only by governance.services (lifecycle, decisions, approvals,
# attestations). On
# PostgreSQL, triggers (migration 0005) refuse UPDATE and DELETE of every row
# below: a submission, a status change, a waiver, a decision and an
# attestation are records of what happened, never edited afterwards.


class Submission(models.Model):
    """The frozen content of a use case as it was submitted for review.

    ``snapshot`` holds the use case's fields, its risk assessment, the model
    version with its artifact digest and the id of the policy result computed
    on submission; ``snapshot_sha256`` is SHA-256 over its canonical JSON
    (``audit.verify.canonical_json``). ``number`` counts one use case's
    submissions from 1. Written by ``services.lifecycle.use_case_submit`` only.
    """

    use_case = models.ForeignKey(
        UseCase, on_delete=models.PROTECT, related_name="submissions"
    )
    number = models.PositiveIntegerField()
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    submitted_at = models.DateTimeField()
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    artifact_digest = models.CharField(max_length=64)
    policy_result = models.ForeignKey(
        PolicyResult, on_delete=models.PROTECT, related_name="+"
    )
    snapshot = models.JSONField()
    snapshot_sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["-submitted_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["use_case", "number"], name="submission_number_unique"
            )
        ]

    def __str__(self) -> str:
        return f"submission {self.number} of use case {self.use_case_id}"


class UseCaseTransition(models.Model):
    """One move of a use case's status: from where to where, by whom, why.

    The history ``selectors.in_service_on`` answers from. ``actor`` is empty
    when the platform moved it (expiry, return to review). A transition into
    ``in_review`` opens a review round; the decisions taken in that round
    point to it (``Decision.review_round``), which is how a high-risk case's
    two approvals are counted.
    """

    use_case = models.ForeignKey(
        UseCase, on_delete=models.PROTECT, related_name="transitions"
    )
    from_status = models.CharField(max_length=20, choices=UseCaseStatus.choices)
    to_status = models.CharField(max_length=20, choices=UseCaseStatus.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    reason = models.TextField(blank=True)
    submission = models.ForeignKey(
        Submission,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="transitions",
    )
    decision = models.OneToOneField(
        "Decision",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="transition",
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["use_case", "created_at"], name="use_case_transition_at"
            )
        ]

    def __str__(self) -> str:
        return f"use case {self.use_case_id}: {self.from_status} -> {self.to_status}"


class Waiver(models.Model):
    """A reviewer's written exemption of named failed rules of one policy result.

    ``rule_ids`` lists ``policy/rule_id`` of outcomes that failed in
    ``policy_result``, each once and sorted; the waiver is good for that
    result only (and so for its artifact digest). ``justification`` is at
    least ``services.lifecycle.WAIVER_MIN_JUSTIFICATION`` characters.
    """

    use_case = models.ForeignKey(
        UseCase, on_delete=models.PROTECT, related_name="waivers"
    )
    policy_result = models.ForeignKey(
        PolicyResult, on_delete=models.PROTECT, related_name="waivers"
    )
    rule_ids = models.JSONField()
    justification = models.TextField()
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    granted_at = models.DateTimeField()

    class Meta:
        ordering = ["-granted_at", "-id"]

    def __str__(self) -> str:
        return f"waiver {self.pk} of {', '.join(self.rule_ids)}"


class DecisionKind(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"
    REQUEST_CHANGES = "request_changes", "Request changes"
    SUSPEND = "suspend", "Suspend"
    REINSTATE = "reinstate", "Reinstate"
    RETIRE = "retire", "Retire"


class DecisionQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Decisions follow the visibility of their use case."""
        return self.filter(use_case__in=UseCase.objects.visible_to(user).values("pk"))


class Decision(models.Model):
    """A reviewer's signed judgement on a use case and the version it names.

    ``from_status``/``to_status`` are the use case's status around it (equal
    for the first of a high-risk case's two approvals). ``approved_at`` and
    ``expires_at`` are set, together, on the decision that puts the use case
    in service (the completing approval, a reinstatement): the approval in
    force. ``model_version``/``artifact_digest`` snapshot what was decided
    on. The signed statement is its ``attestation``. Written by
    ``governance.services`` only.
    """

    use_case = models.ForeignKey(
        UseCase, on_delete=models.PROTECT, related_name="decisions"
    )
    submission = models.ForeignKey(
        Submission, on_delete=models.PROTECT, related_name="decisions"
    )
    review_round = models.ForeignKey(
        UseCaseTransition,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="decisions",
    )
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="decisions"
    )
    artifact_digest = models.CharField(max_length=64)
    kind = models.CharField(max_length=20, choices=DecisionKind.choices)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    rationale = models.TextField()
    policy_result = models.ForeignKey(
        PolicyResult,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="decisions",
    )
    waiver = models.ForeignKey(
        Waiver,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="decisions",
    )
    from_status = models.CharField(max_length=20, choices=UseCaseStatus.choices)
    to_status = models.CharField(max_length=20, choices=UseCaseStatus.choices)
    decided_at = models.DateTimeField()
    approved_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = DecisionQuerySet.as_manager()

    class Meta:
        ordering = ["-decided_at", "-id"]
        indexes = [
            models.Index(fields=["use_case", "decided_at"], name="decision_use_case_at")
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(rationale=""), name="decision_rationale_required"
            ),
            models.CheckConstraint(
                condition=Q(approved_at__isnull=True, expires_at__isnull=True)
                | Q(approved_at__isnull=False, expires_at__isnull=False),
                name="decision_approval_period_complete",
            ),
            models.CheckConstraint(
                condition=~Q(kind=DecisionKind.APPROVE)
                | Q(policy_result__isnull=False),
                name="decision_approval_names_policy_result",
            ),
            # The database's own guard for "two approvals from two reviewers":
            # one reviewer approves at most once per review round.
            models.UniqueConstraint(
                fields=["review_round", "reviewer"],
                condition=Q(kind=DecisionKind.APPROVE),
                name="decision_one_approval_per_reviewer_per_round",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of use case {self.use_case_id} by {self.reviewer_id}"


class AttestationQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Run attestations follow their run; decision ones their use case."""
        return self.filter(
            Q(run__in=EvaluationRun.objects.visible_to(user).values("pk"))
            | Q(decision__in=Decision.objects.visible_to(user).values("pk"))
        )


class Attestation(models.Model):
    """A signed statement about a finished evaluation run or a decision.

    ``envelope`` is a DSSE envelope signed with the platform key whose
    payload is the canonical JSON of ``statement`` (an in-toto Statement v1);
    ``statement_sha256`` is SHA-256 of those payload bytes. Exactly one of
    ``run`` and ``decision`` is set. The envelope is what
    ``python -m audit.verify`` checks.
    """

    run = models.OneToOneField(
        EvaluationRun,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="attestation",
    )
    decision = models.OneToOneField(
        Decision,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="attestation",
    )
    payload_type = models.CharField(max_length=100)
    statement = models.JSONField()
    statement_sha256 = models.CharField(max_length=64)
    envelope = models.JSONField()
    key_id = models.CharField(max_length=64)
    created_at = models.DateTimeField()

    objects = AttestationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(run__isnull=False, decision__isnull=True)
                | Q(run__isnull=True, decision__isnull=False),
                name="attestation_of_run_or_decision",
            )
        ]

    def __str__(self) -> str:
        if self.run_id:
            return f"attestation of run {self.run_id}"
        return f"attestation of decision {self.decision_id}"


class ReviewQueueItem(UseCase):
    """A use case as the admin's review queue shows it (``governance.admin``).

    A proxy: the same rows, registered apart from the use case admin so the
    queue has its own list, evidence panel and decision form.
    """

    class Meta:
        proxy = True
        verbose_name = "review queue item"
        verbose_name_plural = "review queue"
