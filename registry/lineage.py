"""Lineage graphs: where a model or dataset version came from and what it fed.

A graph is built breadth-first from one root, level by level, with a fixed
number of queries per level whatever its width (never one per node). Every
model and dataset version in it passes ``visible_to(user)``: a neighbour the
user may not see is absent, and nothing in the graph (no edge, no count, no
``truncated`` flag) reveals that it exists.

Edges read as sentences, ``source relation target``:

* ``base_version base_of derived_version``;
* ``model_version trained_on | fine_tuned_on | evaluated_on dataset_version``;
* ``model_version produced_by_run training_run``;
* ``model_version evaluated_by evaluation`` and ``model_version decided_by
  decision`` (added by governance's providers).

From the root the walk goes both ways; an ancestor is only expanded upstream
(its base, its datasets, its training run) and a descendant only downstream
(what derives from it, what used it), so siblings and cousins stay out.

Evaluations and decisions belong to ``governance``, which ``registry`` never
imports; they join the graph through ``DOWNSTREAM_PROVIDERS`` (see
``register_downstream_provider``). See docs/lineage.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from registry import licences
from registry.models import (
    DatasetRole,
    DatasetVersion,
    ModelVersion,
    ModelVersionDataset,
)

MIN_DEPTH = 1
MAX_DEPTH = 10
DEFAULT_DEPTH = 3
LICENCE_INCOMPATIBLE = "licence_incompatible"


class NodeType(models.TextChoices):
    """What a node stands for; ``evaluation`` and ``decision`` come from providers."""

    MODEL_VERSION = "model_version", "Model version"
    DATASET_VERSION = "dataset_version", "Dataset version"
    TRAINING_RUN = "training_run", "Training run"
    EVALUATION = "evaluation", "Evaluation"
    DECISION = "decision", "Decision"
    MODIFICATION = "modification", "Modification assessment"


class Relation(models.TextChoices):
    """How an edge's source relates to its target, read ``source relation target``."""

    BASE_OF = "base_of", "is the base of"
    TRAINED_ON = "trained_on", "was trained on"
    FINE_TUNED_ON = "fine_tuned_on", "was fine-tuned on"
    EVALUATED_ON = "evaluated_on", "was evaluated on"
    PRODUCED_BY_RUN = "produced_by_run", "was produced by run"
    EVALUATED_BY = "evaluated_by", "was evaluated by"
    DECIDED_BY = "decided_by", "was decided on by"
    ASSESSED_BY = "assessed_by", "was assessed against its base by"


class Direction(models.TextChoices):
    """Which side of the root a node was found on."""

    ROOT = "root", "Root"
    UPSTREAM = "upstream", "Upstream"
    DOWNSTREAM = "downstream", "Downstream"


_ROLE_RELATION = {
    DatasetRole.TRAINING: Relation.TRAINED_ON,
    DatasetRole.FINE_TUNING: Relation.FINE_TUNED_ON,
    DatasetRole.EVALUATION: Relation.EVALUATED_ON,
}
# Evaluating on data does not make a derivative of it, so only these roles
# carry the data's licence into the model.
_LICENSING_ROLES = (DatasetRole.TRAINING, DatasetRole.FINE_TUNING)
_ROLE_NOUN = {
    DatasetRole.TRAINING: "training data",
    DatasetRole.FINE_TUNING: "fine-tuning data",
}

_MODEL_VERSION_RELATED = ("model__agency", "licence")
_DATASET_VERSION_RELATED = ("dataset__agency", "licence")


def model_version_node_id(pk: int) -> str:
    """The graph id of a model version."""
    return f"{NodeType.MODEL_VERSION.value}:{pk}"


def dataset_version_node_id(pk: int) -> str:
    """The graph id of a dataset version."""
    return f"{NodeType.DATASET_VERSION.value}:{pk}"


def training_run_node_id(reference: str) -> str:
    """The graph id of a training run reference (an MLflow run id or URI)."""
    return f"{NodeType.TRAINING_RUN.value}:{reference}"


@dataclass
class Contribution:
    """Nodes and edges a downstream provider adds for one level of the walk.

    Provided nodes are leaves: the walk does not expand them further. Each
    node dict needs ``id``, ``type``, ``label``, ``agency`` and ``licence``;
    each edge ``source``, ``target`` and ``relation``.
    """

    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)


# A provider receives the ids of the model versions at one level and the
# reading user, makes a fixed number of queries, and returns only what the
# user may see.
DownstreamProvider = Callable[..., Contribution]
DOWNSTREAM_PROVIDERS: list[DownstreamProvider] = []


def register_downstream_provider(provider: DownstreamProvider) -> DownstreamProvider:
    """Add a provider of downstream nodes for model versions (usable as a decorator).

    Called as ``provider(model_version_ids=set[int], user=user)`` once per
    level; meant for apps that ``registry`` may not import (evaluations and
    decisions in ``governance``), registered from their ``AppConfig.ready``.
    Registering the same function twice has no further effect.
    """
    if provider not in DOWNSTREAM_PROVIDERS:
        DOWNSTREAM_PROVIDERS.append(provider)
    return provider


def _model_version_node(version: ModelVersion) -> dict[str, Any]:
    return {
        "id": model_version_node_id(version.pk),
        "type": NodeType.MODEL_VERSION.value,
        "label": str(version),
        "agency": version.model.agency.slug,
        "licence": version.licence.expression,
        "version": version.version,
        "derivation": version.derivation,
        "artifact_digest": version.artifact_digest,
        "parameter_count": version.parameter_count,
        "released_at": version.released_at.isoformat() if version.released_at else None,
    }


def _dataset_version_node(version: DatasetVersion) -> dict[str, Any]:
    return {
        "id": dataset_version_node_id(version.pk),
        "type": NodeType.DATASET_VERSION.value,
        "label": str(version),
        "agency": version.dataset.agency.slug,
        "licence": version.licence.expression,
        "version": version.version,
        "personal_data": version.personal_data,
        "artifact_digest": version.digest,
    }


def _training_run_node(reference: str) -> dict[str, Any]:
    return {
        "id": training_run_node_id(reference),
        "type": NodeType.TRAINING_RUN.value,
        "label": reference,
        "agency": None,
        "licence": None,
    }


def _incompatibility(
    *,
    outbound: ModelVersion,
    inbound: ModelVersion | DatasetVersion,
    role: str | None = None,
) -> dict[str, Any] | None:
    """The warning for one (model, input) pair, or None when the licences agree."""
    ok, reason = licences.compatible(outbound.licence, inbound.licence)
    if ok:
        return None
    if isinstance(inbound, ModelVersion):
        what = f"Base version {inbound} is licensed {inbound.licence.expression}"
        related = model_version_node_id(inbound.pk)
    else:
        what = (
            f"The {_ROLE_NOUN[role]} {inbound} is licensed {inbound.licence.expression}"
        )
        related = dataset_version_node_id(inbound.pk)
    return {
        "node": model_version_node_id(outbound.pk),
        "related": related,
        "code": LICENCE_INCOMPATIBLE,
        "message": (
            f"{what}, but this model version is licensed "
            f"{outbound.licence.expression}: {reason}"
        ),
    }


def licence_warnings(version: ModelVersion, *, user=None) -> list[dict[str, Any]]:
    """Licence conflicts between a model version and its direct inputs.

    Compares the version's licence with its base version's and with every
    training or fine-tuning dataset version's (``licences.compatible``);
    evaluation data is not an input to the model and is not compared. With
    ``user``, only inputs visible to that user are considered, so a warning
    never names what the user may not see; without it (the policy engine)
    every input counts. Each warning is ``{"node", "related", "code",
    "message"}``. At most three queries.
    """
    warnings = []
    if version.base_version_id is not None:
        bases = ModelVersion.objects.select_related(*_MODEL_VERSION_RELATED)
        if user is not None:
            bases = bases.visible_to(user)
        base = bases.filter(pk=version.base_version_id).first()
        if base is not None:
            warning = _incompatibility(outbound=version, inbound=base)
            if warning:
                warnings.append(warning)
    datasets = DatasetVersion.objects.all()
    if user is not None:
        datasets = datasets.visible_to(user)
    links = (
        ModelVersionDataset.objects.filter(
            model_version_id=version.pk,
            role__in=_LICENSING_ROLES,
            dataset_version__in=datasets,
        )
        .select_related(*(f"dataset_version__{p}" for p in _DATASET_VERSION_RELATED))
        .order_by("role", "dataset_version_id")
    )
    for link in links:
        warning = _incompatibility(
            outbound=version, inbound=link.dataset_version, role=link.role
        )
        if warning:
            warnings.append(warning)
    return warnings


class _Graph:
    """The nodes and edges found so far, deduplicated, in discovery order.

    While ``frozen`` nothing is added; ``grew`` records whether anything new
    would have been, which is how the level past ``depth`` is probed.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.model_versions: dict[int, ModelVersion] = {}
        self.dataset_versions: dict[int, DatasetVersion] = {}
        self.dataset_roles: set[tuple[int, int, str]] = set()
        self.frozen = False
        self.grew = False

    def add_node(self, node: dict[str, Any], *, direction: str, distance: int) -> bool:
        """Add a node unless present; return whether it is new."""
        if node["id"] in self.nodes:
            return False
        self.grew = True
        if not self.frozen:
            self.nodes[node["id"]] = {
                **node,
                "direction": direction,
                "distance": distance,
            }
        return True

    def add_model_version(self, version: ModelVersion, **where: Any) -> bool:
        """Add a model version node; return whether it is new."""
        is_new = self.add_node(_model_version_node(version), **where)
        if is_new and not self.frozen:
            self.model_versions[version.pk] = version
        return is_new

    def add_dataset_version(self, version: DatasetVersion, **where: Any) -> bool:
        """Add a dataset version node; return whether it is new."""
        is_new = self.add_node(_dataset_version_node(version), **where)
        if is_new and not self.frozen:
            self.dataset_versions[version.pk] = version
        return is_new

    def add_edge(self, source: str, target: str, relation: str) -> None:
        """Add an edge unless present."""
        key = (source, target, relation)
        if key in self.edges:
            return
        self.grew = True
        if not self.frozen:
            self.edges[key] = {"source": source, "target": target, "relation": relation}

    def add_dataset_link(self, link: ModelVersionDataset) -> None:
        """Add the edge of a model-dataset link and remember its role."""
        self.add_edge(
            model_version_node_id(link.model_version_id),
            dataset_version_node_id(link.dataset_version_id),
            _ROLE_RELATION[link.role],
        )
        if not self.frozen:
            self.dataset_roles.add(
                (link.model_version_id, link.dataset_version_id, link.role)
            )


@dataclass
class _Frontier:
    """The nodes to expand at the next level, by kind and direction."""

    up_models: set[int] = field(default_factory=set)
    down_models: set[int] = field(default_factory=set)
    down_datasets: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.up_models or self.down_models or self.down_datasets)


class _Walk:
    """One breadth-first lineage walk for one user."""

    def __init__(self, *, user, depth: int) -> None:
        if not MIN_DEPTH <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be between {MIN_DEPTH} and {MAX_DEPTH}")
        self.user = user
        self.depth = depth
        self.graph = _Graph()
        self.truncated = False
        self.model_versions = ModelVersion.objects.visible_to(user).select_related(
            *_MODEL_VERSION_RELATED
        )
        self.dataset_versions = DatasetVersion.objects.visible_to(user)

    def run(self, frontier: _Frontier) -> None:
        """Expand level by level, then probe one level more to set ``truncated``."""
        for distance in range(1, self.depth + 1):
            if not frontier:
                return
            frontier = self._expand(frontier, distance=distance)
        if frontier:
            self.graph.frozen = True
            self.graph.grew = False
            self._expand(frontier, distance=self.depth + 1)
            self.truncated = self.graph.grew
            self.graph.frozen = False

    def _expand(self, frontier: _Frontier, *, distance: int) -> _Frontier:
        """Add the visible neighbours of ``frontier``; return the next frontier.

        At most four queries plus each downstream provider's fixed few.
        """
        nxt = _Frontier()
        up = {"direction": Direction.UPSTREAM.value, "distance": distance}
        down = {"direction": Direction.DOWNSTREAM.value, "distance": distance}
        if frontier.up_models:
            self._expand_upstream(frontier.up_models, nxt, up)
        if frontier.down_models:
            self._expand_derived(frontier.down_models, nxt, down)
        if frontier.down_datasets:
            self._expand_dataset_users(frontier.down_datasets, nxt, down)
        return nxt

    def _expand_upstream(self, model_ids: set[int], nxt: _Frontier, up: dict) -> None:
        """Base versions, training runs and training data of these versions."""
        graph = self.graph
        sources = [graph.model_versions[pk] for pk in sorted(model_ids)]
        base_ids = {v.base_version_id for v in sources if v.base_version_id}
        bases = {}
        if base_ids:
            bases = {b.pk: b for b in self.model_versions.filter(pk__in=base_ids)}
        for version in sources:
            base = bases.get(version.base_version_id)
            if base is not None:
                if graph.add_model_version(base, **up):
                    nxt.up_models.add(base.pk)
                graph.add_edge(
                    model_version_node_id(base.pk),
                    model_version_node_id(version.pk),
                    Relation.BASE_OF,
                )
            if version.training_run:
                run = _training_run_node(version.training_run)
                graph.add_node(run, **up)
                graph.add_edge(
                    model_version_node_id(version.pk),
                    run["id"],
                    Relation.PRODUCED_BY_RUN,
                )
        links = (
            ModelVersionDataset.objects.filter(
                model_version_id__in=model_ids,
                dataset_version__in=self.dataset_versions,
            )
            .select_related(
                *(f"dataset_version__{p}" for p in _DATASET_VERSION_RELATED)
            )
            .order_by("model_version_id", "role", "dataset_version_id")
        )
        for link in links:
            # Dataset versions have no recorded upstream: they stay leaves.
            graph.add_dataset_version(link.dataset_version, **up)
            graph.add_dataset_link(link)

    def _expand_derived(self, model_ids: set[int], nxt: _Frontier, down: dict) -> None:
        """Versions derived from these, and what the downstream providers add."""
        graph = self.graph
        derived = self.model_versions.filter(base_version_id__in=model_ids).order_by(
            "pk"
        )
        for version in derived:
            if graph.add_model_version(version, **down):
                nxt.down_models.add(version.pk)
            graph.add_edge(
                model_version_node_id(version.base_version_id),
                model_version_node_id(version.pk),
                Relation.BASE_OF,
            )
        for provider in DOWNSTREAM_PROVIDERS:
            contribution = provider(model_version_ids=set(model_ids), user=self.user)
            for node in contribution.nodes:
                graph.add_node(node, **down)
            for edge in contribution.edges:
                graph.add_edge(edge["source"], edge["target"], edge["relation"])

    def _expand_dataset_users(
        self, dataset_ids: set[int], nxt: _Frontier, down: dict
    ) -> None:
        """Model versions trained or evaluated on these dataset versions."""
        graph = self.graph
        links = (
            ModelVersionDataset.objects.filter(
                dataset_version_id__in=dataset_ids,
                model_version__in=self.model_versions,
            )
            .select_related(*(f"model_version__{p}" for p in _MODEL_VERSION_RELATED))
            .order_by("model_version_id", "role")
        )
        for link in links:
            if graph.add_model_version(link.model_version, **down):
                nxt.down_models.add(link.model_version_id)
            graph.add_dataset_link(link)

    def warnings(self) -> list[dict[str, Any]]:
        """Licence conflicts along every licensing edge in the graph (no query)."""
        graph = self.graph
        found = []
        for version in graph.model_versions.values():
            base = graph.model_versions.get(version.base_version_id)
            if base is not None:
                found.append(_incompatibility(outbound=version, inbound=base))
        for model_pk, dataset_pk, role in sorted(graph.dataset_roles):
            if role in _LICENSING_ROLES:
                found.append(
                    _incompatibility(
                        outbound=graph.model_versions[model_pk],
                        inbound=graph.dataset_versions[dataset_pk],
                        role=role,
                    )
                )
        return [warning for warning in found if warning is not None]

    def result(self, root: str) -> dict[str, Any]:
        """The graph in the documented shape."""
        return {
            "root": root,
            "nodes": list(self.graph.nodes.values()),
            "edges": list(self.graph.edges.values()),
            "warnings": self.warnings(),
            "truncated": self.truncated,
        }


def model_version_lineage(
    version: ModelVersion, *, user, depth: int = DEFAULT_DEPTH
) -> dict[str, Any]:
    """The lineage graph around a model version, as the user may see it.

    Upstream: its base versions (recursively), the dataset versions each was
    trained, fine-tuned or evaluated on, and its training run. Downstream: the
    versions derived from it (recursively) and what the downstream providers
    add. ``depth`` bounds the hops from the root; ``truncated`` says whether
    visible nodes lie beyond it. Returns ``{"root", "nodes", "edges",
    "warnings", "truncated"}`` (docs/lineage.md). About four queries per
    level. Raises ``ModelVersion.DoesNotExist`` when the user may not see the
    version and ``ValueError`` when ``depth`` is outside 1..10.
    """
    walk = _Walk(user=user, depth=depth)
    root = walk.model_versions.get(pk=version.pk)
    walk.graph.add_model_version(root, direction=Direction.ROOT.value, distance=0)
    walk.run(_Frontier(up_models={root.pk}, down_models={root.pk}))
    return walk.result(model_version_node_id(root.pk))


def dataset_version_lineage(
    dataset_version: DatasetVersion, *, user, depth: int = DEFAULT_DEPTH
) -> dict[str, Any]:
    """The lineage graph downstream of a dataset version, as the user may see it.

    The model versions that used it (with the role as the edge's relation),
    then the versions derived from those (recursively), bounded by ``depth``
    as for ``model_version_lineage``. Licence warnings cover every licensing
    edge in the graph. Raises ``DatasetVersion.DoesNotExist`` when the user
    may not see the dataset version and ``ValueError`` for a bad ``depth``.
    """
    walk = _Walk(user=user, depth=depth)
    root = walk.dataset_versions.select_related(*_DATASET_VERSION_RELATED).get(
        pk=dataset_version.pk
    )
    walk.graph.add_dataset_version(root, direction=Direction.ROOT.value, distance=0)
    walk.run(_Frontier(down_datasets={root.pk}))
    return walk.result(dataset_version_node_id(root.pk))
