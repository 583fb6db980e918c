"""What the policy rules read about one use case, and what one rule concludes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from django.db.models import F
from django.utils import timezone

from governance.models import (
    EvaluationRun,
    EvaluationSuite,
    RuleStatus,
    RunStatus,
    UseCase,
)
from registry.models import (
    DatasetRole,
    DatasetVersion,
    ModelVersion,
    ModelVersionDataset,
)

# A base chain longer than this is a data error, not a lineage.
MAX_LINEAGE_DEPTH = 50
LEARNING_ROLES = (DatasetRole.TRAINING, DatasetRole.FINE_TUNING)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _short(digest: str) -> str:
    return f"sha256:{digest[:12]}" if digest else "(none)"


def readable_number(value: float) -> str:
    """A value as a reviewer reads it: 0.8123 -> 0.8123, 1250000 -> 1,250,000."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def _list(items: Iterable[str]) -> str:
    return ", ".join(items)


class Facts:
    """What the rules read about one use case, each fact queried once.

    The version comes with its model, agency and licence; lineage facts walk
    the base chain; runs are looked up per suite reference and cached.
    """

    def __init__(self, use_case: UseCase, *, now: datetime | None = None) -> None:
        self.use_case = use_case
        self.version: ModelVersion = use_case.model_version
        self.now = now or timezone.now()
        self._runs: dict[str | None, EvaluationRun | None] = {}

    @cached_property
    def ancestors(self) -> list[ModelVersion]:
        """Base versions, nearest first, each with its model and licence."""
        chain: list[ModelVersion] = []
        seen = {self.version.pk}
        base_id = self.version.base_version_id
        while base_id is not None and base_id not in seen:
            if len(chain) >= MAX_LINEAGE_DEPTH:
                break
            base = ModelVersion.objects.select_related("model__agency", "licence").get(
                pk=base_id
            )
            chain.append(base)
            seen.add(base.pk)
            base_id = base.base_version_id
        return chain

    @cached_property
    def learning_links(self) -> list[ModelVersionDataset]:
        """Training and fine-tuning links of the version and of its base chain."""
        ids = [self.version.pk, *(a.pk for a in self.ancestors)]
        return list(
            ModelVersionDataset.objects.filter(
                model_version_id__in=ids, role__in=LEARNING_ROLES
            )
            .select_related(
                "dataset_version__dataset__agency", "dataset_version__licence"
            )
            .order_by("model_version_id", "role", "dataset_version_id")
        )

    @cached_property
    def learning_datasets(self) -> list[DatasetVersion]:
        """The distinct dataset versions the version or its bases learned from."""
        found: dict[int, DatasetVersion] = {}
        for link in self.learning_links:
            found.setdefault(link.dataset_version_id, link.dataset_version)
        return list(found.values())

    @cached_property
    def own_datasets(self) -> list[DatasetVersion]:
        """The distinct dataset versions linked to this version, in any role."""
        links = (
            ModelVersionDataset.objects.filter(model_version_id=self.version.pk)
            .select_related("dataset_version__dataset__agency")
            .order_by("dataset_version_id")
        )
        found: dict[int, DatasetVersion] = {}
        for link in links:
            found.setdefault(link.dataset_version_id, link.dataset_version)
        return list(found.values())

    def suites(self, reference: str) -> list[EvaluationSuite]:
        """Suites matching ``name`` (any version) or ``name@version``."""
        name, _, version = reference.partition("@")
        suites = EvaluationSuite.objects.filter(name=name)
        if version:
            suites = suites.filter(version=version)
        return list(suites)

    def latest_run(self, reference: str | None) -> EvaluationRun | None:
        """The latest successful run on this exact digest, of a suite or of any.

        Runs of this version whose ``artifact_digest`` differs from the
        version's current digest never count, nor do queued, running, failed
        or cancelled ones.
        """
        if reference not in self._runs:
            runs = EvaluationRun.objects.filter(
                model_version_id=self.version.pk,
                artifact_digest=self.version.artifact_digest,
                status=RunStatus.SUCCEEDED,
            )
            if reference is not None:
                name, _, version = reference.partition("@")
                runs = runs.filter(suite__name=name)
                if version:
                    runs = runs.filter(suite__version=version)
            self._runs[reference] = (
                runs.select_related("suite")
                .prefetch_related("metrics")
                .order_by(F("finished_at").desc(nulls_last=True), "-pk")
                .first()
            )
        return self._runs[reference]


@dataclass
class Outcome:
    """What one rule concluded: a status, a sentence and the evidence behind it."""

    status: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _verdict(
    violations: list[str], evidence: dict[str, Any], passed: str, *, applicable=True
) -> Outcome:
    """Failed naming every violation, else passed (or not applicable)."""
    evidence["violations"] = violations
    if violations:
        return Outcome(RuleStatus.FAILED, " ".join(violations), evidence)
    if not applicable:
        return Outcome(RuleStatus.NOT_APPLICABLE, passed, evidence)
    return Outcome(RuleStatus.PASSED, passed, evidence)


# --- required_evaluation --------------------------------------------------------
