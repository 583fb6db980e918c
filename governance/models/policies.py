"""Policies and the immutable results of checking them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from governance.models.use_cases import RiskTier, UseCase
from registry.selectors import is_oversight, user_agency_id


class PolicyScope(models.TextChoices):
    PLATFORM = "platform", "Every use case"
    AGENCY = "agency", "Use cases of one agency"
    RISK_TIER = "risk_tier", "Use cases of one risk tier"


class PolicyQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Oversight sees every policy; others those that can apply to them.

        That is platform and risk-tier policies, and their own agency's.
        """
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
    """One version of a named set of declarative rules (``governance.rules``).

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
