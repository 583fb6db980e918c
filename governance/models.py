"""Governance records: evaluations, policies and decisions."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

# --- Evaluations ------------------------------------------------------------


class EvaluationSuiteQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Built-in suites are visible to all; an agency's own to it and oversight."""
        from registry.models import is_oversight, user_agency_id

        if is_oversight(user):
            return self
        return self.filter(
            models.Q(agency__isnull=True) | models.Q(agency_id=user_agency_id(user))
        )


class EvaluationSuite(models.Model):
    """A named, versioned set of tasks over registry dataset versions.

    ``tasks`` is a list of ``{"task", "name", "dataset_version", "options"}``;
    each dataset version holds the JSONL file of that task. Built-in suites
    (``agency`` empty) are written for Civitas and shipped with it.
    ``datasets`` holds the same dataset versions as rows (``SuiteDataset``,
    filled by ``services.suite_register``), so the database refuses to
    delete data a suite reads: a legal hold the JSON alone cannot give.
    """

    name = models.SlugField(max_length=80)
    version = models.CharField(max_length=64)
    description = models.TextField(blank=True)
    licence = models.ForeignKey(
        "registry.Licence", on_delete=models.PROTECT, related_name="+"
    )
    agency = models.ForeignKey(
        "registry.Agency",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="suites",
        help_text="Empty for the built-in suites of the platform.",
    )
    tasks = models.JSONField()
    datasets = models.ManyToManyField(
        "registry.DatasetVersion",
        through="SuiteDataset",
        related_name="suites",
        blank=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = EvaluationSuiteQuerySet.as_manager()

    class Meta:
        ordering = ["name", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "version"], name="suite_version_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class SuiteDataset(models.Model):
    """One dataset version a suite's tasks read; protects it from deletion."""

    suite = models.ForeignKey(
        EvaluationSuite, on_delete=models.PROTECT, related_name="dataset_links"
    )
    dataset_version = models.ForeignKey(
        "registry.DatasetVersion", on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["suite", "dataset_version"], name="suite_dataset_unique"
            )
        ]

    def __str__(self) -> str:
        return f"suite {self.suite_id} reads {self.dataset_version_id}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class EvaluationRunQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Runs follow the visibility of the model version they measured."""
        from registry.models import ModelVersion

        return self.filter(model_version__in=ModelVersion.objects.visible_to(user))


class EvaluationRun(models.Model):
    """One measurement of one artifact digest on one suite, by a worker.

    ``status`` moves queued → running → succeeded | failed, or to cancelled;
    only ``governance.services`` moves it, with conditional updates.
    """

    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="evaluations"
    )
    suite = models.ForeignKey(
        EvaluationSuite, on_delete=models.PROTECT, related_name="runs"
    )
    status = models.CharField(
        max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress = models.FloatField(default=0.0)
    progress_note = models.CharField(max_length=200, blank=True)
    artifact_digest = models.CharField(max_length=64)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    failure_code = models.CharField(max_length=50, blank=True)
    failure_reason = models.TextField(blank=True)
    results = models.JSONField(default=list, blank=True)
    environment = models.JSONField(default=dict, blank=True)
    items_key = models.CharField(max_length=500, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    engine_version = models.CharField(max_length=32, blank=True)
    wall_seconds = models.FloatField(null=True, blank=True)

    objects = EvaluationRunQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["status", "requested_at"])]

    def __str__(self) -> str:
        return f"run {self.pk}: {self.model_version_id} on {self.suite_id}"


class RunMetric(models.Model):
    """One metric of one task of a run, stored so runs can be filtered and compared."""

    run = models.ForeignKey(
        EvaluationRun, on_delete=models.PROTECT, related_name="metrics"
    )
    task = models.CharField(max_length=80)
    name = models.CharField(max_length=120)
    value = models.FloatField()

    class Meta:
        ordering = ["task", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "task", "name"], name="run_metric_unique"
            )
        ]
        indexes = [models.Index(fields=["task", "name", "value"])]

    def __str__(self) -> str:
        return f"{self.task}.{self.name}={self.value:g}"


# --- Use cases, risk and policies ---------------------------------------------
# Written only by governance.usecase_services (and, for the lifecycle status,
# the lifecycle services). On PostgreSQL, triggers (migration 0004) refuse
# UPDATE and DELETE of Questionnaire, Policy and PolicyResult rows: a
# published questionnaire, a policy version and a verdict never change.


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
        from registry.models import is_oversight, user_agency_id

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


class PolicyScope(models.TextChoices):
    PLATFORM = "platform", "Every use case"
    AGENCY = "agency", "Use cases of one agency"
    RISK_TIER = "risk_tier", "Use cases of one risk tier"


class PolicyQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Oversight sees every policy; others those that can apply to them.

        That is platform and risk-tier policies, and their own agency's.
        """
        from registry.models import is_oversight, user_agency_id

        if is_oversight(user):
            return self
        return self.filter(
            Q(scope__in=[PolicyScope.PLATFORM, PolicyScope.RISK_TIER])
            | Q(scope=PolicyScope.AGENCY, agency_id=user_agency_id(user))
        )

    def current(self):
        """The latest version of each policy name (active or not)."""
        newer = Policy.objects.filter(
            name=models.OuterRef("name"), version__gt=models.OuterRef("version")
        )
        return self.filter(~models.Exists(newer))

    def in_force_for(self, use_case: UseCase):
        """The active latest versions that apply to the use case.

        Platform policies, its agency's, and its risk tier's once assessed.
        """
        applies = Q(scope=PolicyScope.PLATFORM) | Q(
            scope=PolicyScope.AGENCY, agency_id=use_case.agency_id
        )
        if use_case.risk_tier:
            applies |= Q(scope=PolicyScope.RISK_TIER, risk_tier=use_case.risk_tier)
        return self.current().filter(applies, is_active=True)


class Policy(models.Model):
    """One version of a named set of declarative rules (``governance.policies``).

    Rows are immutable: editing a policy writes version n+1 under the same
    name, and only the latest version of a name is in force, if its
    ``is_active``. ``rules`` conforms to ``schemas/policy.schema.json``. The
    scope names an agency (scope ``agency``), a risk tier (scope
    ``risk_tier``) or neither (scope ``platform``).
    """

    name = models.SlugField(max_length=80)
    version = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    scope = models.CharField(max_length=20, choices=PolicyScope.choices)
    agency = models.ForeignKey(
        "registry.Agency",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="policies",
    )
    risk_tier = models.CharField(max_length=20, choices=RiskTier.choices, blank=True)
    rules = models.JSONField()
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["name", "-version"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(
                fields=["name", "version"], name="policy_version_unique"
            ),
            models.CheckConstraint(
                condition=(
                    Q(scope=PolicyScope.PLATFORM, agency__isnull=True, risk_tier="")
                    | Q(scope=PolicyScope.AGENCY, agency__isnull=False, risk_tier="")
                    | (
                        Q(scope=PolicyScope.RISK_TIER, agency__isnull=True)
                        & ~Q(risk_tier="")
                    )
                ),
                name="policy_scope_target",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class PolicyTrigger(models.TextChoices):
    SUBMISSION = "submission", "On submission"
    EVALUATION = "evaluation", "After an evaluation"
    ON_DEMAND = "on_demand", "On demand"


class RuleStatus(models.TextChoices):
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    NOT_APPLICABLE = "not_applicable", "Not applicable"


class PolicyResultQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Results follow the visibility of their use case."""
        return self.filter(use_case__in=UseCase.objects.visible_to(user).values("pk"))


class PolicyResult(models.Model):
    """The immutable verdict of the policies in force on one use case, at one time.

    ``outcomes`` is a list of ``{policy, policy_version, rule_id, kind,
    status, evidence, message}``, one per rule of every policy evaluated
    (listed in ``policies``); ``passed`` is true when no outcome failed.
    ``model_version``, ``artifact_digest`` and ``risk_tier`` are snapshots
    taken at evaluation time. Never updated or deleted.
    """

    use_case = models.ForeignKey(
        UseCase, on_delete=models.PROTECT, related_name="policy_results"
    )
    model_version = models.ForeignKey(
        "registry.ModelVersion",
        on_delete=models.PROTECT,
        related_name="policy_results",
    )
    artifact_digest = models.CharField(max_length=64, blank=True)
    risk_tier = models.CharField(max_length=20, choices=RiskTier.choices, blank=True)
    trigger = models.CharField(max_length=20, choices=PolicyTrigger.choices)
    passed = models.BooleanField()
    policies = models.JSONField(default=list)
    outcomes = models.JSONField(default=list)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PolicyResultQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["use_case", "-created_at"], name="policy_result_use_case"
            )
        ]

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return f"policy result {self.pk} for use case {self.use_case_id}: {verdict}"

    def failed_rules(self) -> list[tuple[str, str]]:
        """The ``(policy name, rule id)`` of every failed outcome, in order."""
        return [
            (outcome["policy"], outcome["rule_id"])
            for outcome in self.outcomes
            if outcome["status"] == RuleStatus.FAILED
        ]


# --- Decisions and attestations ---------------------------------------------------
# Written only by governance.lifecycle and governance.attestations. On
# PostgreSQL, triggers (migration 0005) refuse UPDATE and DELETE of every row
# below: a submission, a status change, a waiver, a decision and an
# attestation are records of what happened, never edited afterwards.


class Submission(models.Model):
    """The frozen content of a use case as it was submitted for review.

    ``snapshot`` holds the use case's fields, its risk assessment, the model
    version with its artifact digest and the id of the policy result computed
    on submission; ``snapshot_sha256`` is SHA-256 over its canonical JSON
    (``audit.verify.canonical_json``). ``number`` counts one use case's
    submissions from 1. Written by ``lifecycle.use_case_submit`` only.
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

    The history ``lifecycle.in_service_on`` answers from. ``actor`` is empty
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
    least ``lifecycle.WAIVER_MIN_JUSTIFICATION`` characters.
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
    ``governance.lifecycle`` only.
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
    """A use case as the admin's review queue shows it (``governance.decision_admin``).

    A proxy: the same rows, registered apart from the use case admin so the
    queue has its own list, evidence panel and decision form.
    """

    class Meta:
        proxy = True
        verbose_name = "review queue item"
        verbose_name_plural = "review queue"
