"""Evaluation suites, runs and their metrics."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from registry.models import ModelKind, ModelVersion
from registry.selectors import is_oversight, user_agency_id

# Model kinds that generate text, and the tasks only they can run.
LM_KINDS = frozenset({ModelKind.CAUSAL_LM_KV, ModelKind.CAUSAL_LM})
LM_TASKS = frozenset(
    {
        "perplexity",
        "multiple_choice",
        "stereotype_pairs",
        "refusal",
        "generation",
        "poisoning",
    }
)


class SuiteVisibility(models.TextChoices):
    AGENCY = "agency", "The agency and oversight"
    SHARED = "shared", "Shared with all agencies"


class EvaluationSuiteQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Built-in and shared suites are visible to all; an agency's own to it.

        Oversight reviewers see every suite.
        """
        if is_oversight(user):
            return self
        return self.filter(
            models.Q(agency__isnull=True)
            | models.Q(visibility=SuiteVisibility.SHARED)
            | models.Q(agency_id=user_agency_id(user))
        )


class EvaluationSuite(models.Model):
    """A named, versioned set of tasks over registry dataset versions.

    ``tasks`` is a list of ``{"task", "name", "dataset_version", "options"}``;
    each dataset version holds the JSONL file of that task. Built-in suites
    (``agency`` empty) are written for Civitas and shipped with it.
    ``datasets`` holds the same dataset versions as rows (``SuiteDataset``,
    filled by ``services.suites.suite_register``), so the database refuses to
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
    visibility = models.CharField(
        max_length=10,
        choices=SuiteVisibility.choices,
        default=SuiteVisibility.AGENCY,
        help_text="Who may see and run an agency's suite; built-in suites are "
        "visible to all.",
    )
    metrics = models.JSONField(
        default=list,
        blank=True,
        help_text='The metrics the suite is about, as "task.metric".',
    )
    thresholds = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per metric ("task.metric") a {"min", "max"} a run must meet.',
    )
    previous = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="next_versions",
        help_text="The version of the same suite this one replaces.",
    )
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

    def threshold_verdicts(self, results: list[dict]) -> list[dict]:
        """Each thresholded metric of a run's results with its value and verdict.

        ``results`` is a run's per-task summary (``name``, ``metrics``); one
        ``{"metric", "min"?, "max"?, "value", "passed"}`` per threshold, in
        the thresholds' order. A metric the run did not report (or reported
        as null) fails: what was not measured is not assumed.
        """
        values = {
            f"{r.get('name') or r.get('task')}.{name}": value
            for r in results
            for name, value in (r.get("metrics") or {}).items()
        }
        verdicts = []
        for metric, bounds in self.thresholds.items():
            value = values.get(metric)
            passed = isinstance(value, int | float) and value == value
            if passed and "min" in bounds:
                passed = value >= bounds["min"]
            if passed and "max" in bounds:
                passed = value <= bounds["max"]
            verdicts.append(
                {"metric": metric, **bounds, "value": value, "passed": passed}
            )
        return verdicts

    def with_threshold_verdicts(self, results: list[dict]) -> list[dict]:
        """``results`` with each task's ``thresholds``: its metrics' verdicts."""
        verdicts = self.threshold_verdicts(results)
        out = []
        for result in results:
            prefix = f"{result.get('name') or result.get('task')}."
            mine = [v for v in verdicts if v["metric"].startswith(prefix)]
            out.append({**result, "thresholds": mine} if mine else result)
        return out

    def unsupported_reason(self, kind: str) -> str | None:
        """Why the suite cannot run on a model of this kind, or None if it can."""
        for entry in self.tasks:
            task = entry["task"]
            if task in LM_TASKS and kind not in LM_KINDS:
                return f"task '{task}' needs a causal language model, not '{kind}'"
            if task == "classification" and kind in LM_KINDS:
                return "task 'classification' needs a classifier or a tensor model"
        return None


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

    @property
    def threshold_results(self) -> list[dict]:
        """The suite's thresholds as this run met them (from its ``results``)."""
        return [t for r in self.results or [] for t in r.get("thresholds", [])]

    def thresholds_passed(self) -> bool:
        """Whether the run met every threshold of its suite (True when none)."""
        return all(t.get("passed") for t in self.threshold_results)


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
