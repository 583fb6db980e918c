"""Evaluations and decisions in lineage graphs: governance's downstream providers.

``registry.lineage`` never imports ``governance``; these two providers are
registered with ``registry.lineage.register_downstream_provider`` from
``GovernanceConfig.ready``. Each is called once per level of a walk with the
ids of the model versions at that level and the reading user, makes a fixed
number of queries, and returns only what that user may see: runs by
``EvaluationRun.objects.visible_to`` (the run's model version), decisions by
``Decision.objects.visible_to`` (the decision's use case, as the decision
API). See docs/lineage.md.
"""

from __future__ import annotations

from typing import Any

from governance.models import Decision, EvaluationRun, ModificationAssessment
from registry.lineage import Contribution, NodeType, Relation, model_version_node_id


def evaluation_node_id(pk: int) -> str:
    """The graph id of an evaluation run."""
    return f"{NodeType.EVALUATION.value}:{pk}"


def decision_node_id(pk: int) -> str:
    """The graph id of a decision."""
    return f"{NodeType.DECISION.value}:{pk}"


def _attach(
    contribution: Contribution, node: dict[str, Any], version_id: int, relation
) -> None:
    """Add a node and its edge from the model version it belongs to."""
    contribution.nodes.append(node)
    contribution.edges.append(
        {
            "source": model_version_node_id(version_id),
            "target": node["id"],
            "relation": relation.value,
        }
    )


def _key_metric(run: EvaluationRun) -> str | None:
    """The run's first metric in (task, name) order, as ``task.name=value``."""
    metrics = list(run.metrics.all())
    if not metrics:
        return None
    first = metrics[0]
    return f"{first.task}.{first.name}={first.value:g}"


def _evaluation_node(run: EvaluationRun) -> dict[str, Any]:
    key_metric = _key_metric(run)
    label = f"{run.suite} {run.status}"
    if key_metric:
        label = f"{label} {key_metric}"
    return {
        "id": evaluation_node_id(run.pk),
        "type": NodeType.EVALUATION.value,
        "label": label,
        "agency": run.model_version.model.agency.slug,
        "licence": None,
        "status": run.status,
        "key_metric": key_metric,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def evaluation_nodes(*, model_version_ids: set[int], user) -> Contribution:
    """The evaluation runs of these model versions the user may see.

    One node per run (any status), with an edge ``model_version evaluated_by
    evaluation``. Two queries (the runs, then their metrics).
    """
    runs = (
        EvaluationRun.objects.visible_to(user)
        .filter(model_version_id__in=model_version_ids)
        .select_related("suite", "model_version__model__agency")
        .prefetch_related("metrics")
        .order_by("pk")
    )
    contribution = Contribution()
    for run in runs:
        node = _evaluation_node(run)
        _attach(contribution, node, run.model_version_id, Relation.EVALUATED_BY)
    return contribution


def _reviewer_agency(decision: Decision) -> str | None:
    membership = getattr(decision.reviewer, "membership", None)
    return membership.agency.slug if membership is not None else None


def _decision_node(decision: Decision) -> dict[str, Any]:
    reviewer_agency = _reviewer_agency(decision)
    decided_on = decision.decided_at.date().isoformat()
    return {
        "id": decision_node_id(decision.pk),
        "type": NodeType.DECISION.value,
        "label": f"{decision.kind} by {reviewer_agency or 'platform'} on {decided_on}",
        "agency": decision.use_case.agency.slug,
        "licence": None,
        "kind": decision.kind,
        "reviewer_agency": reviewer_agency,
        "decided_at": decision.decided_at.isoformat(),
    }


def decision_nodes(*, model_version_ids: set[int], user) -> Contribution:
    """The decisions on use cases naming these model versions the user may see.

    A decision names the version it was taken on (``Decision.model_version``);
    one node per decision, with an edge ``model_version decided_by decision``.
    One query.
    """
    decisions = (
        Decision.objects.visible_to(user)
        .filter(model_version_id__in=model_version_ids)
        .select_related("use_case__agency", "reviewer__membership__agency")
        .order_by("decided_at", "pk")
    )
    contribution = Contribution()
    for decision in decisions:
        node = _decision_node(decision)
        _attach(contribution, node, decision.model_version_id, Relation.DECIDED_BY)
    return contribution


def modification_node_id(pk: int) -> str:
    """The graph id of a modification assessment."""
    return f"{NodeType.MODIFICATION.value}:{pk}"


def modification_nodes(*, model_version_ids: set[int], user) -> Contribution:
    """The modification assessments of these (derived) versions the user may see.

    One node per assessment, labelled with its class, and an edge
    ``model_version assessed_by modification``. One query.
    """
    assessments = (
        ModificationAssessment.objects.visible_to(user)
        .filter(model_version_id__in=model_version_ids)
        .select_related("model_version__model__agency")
        .order_by("pk")
    )
    contribution = Contribution()
    for item in assessments:
        node = {
            "id": modification_node_id(item.pk),
            "type": NodeType.MODIFICATION.value,
            "label": f"{item.primary or item.status} vs {item.base_version_id}",
            "agency": item.model_version.model.agency.slug,
            "licence": None,
            "status": item.status,
            "modification_class": item.primary,
            "classes": item.classes,
            "max_relative_change": item.max_relative_change,
            "base_version": model_version_node_id(item.base_version_id),
        }
        _attach(contribution, node, item.model_version_id, Relation.ASSESSED_BY)
    return contribution
