"""The lineage graph drawn as server-rendered SVG, each node a link.

The graph comes from ``registry.lineage`` (what the reader may see, nothing
else). It is small (a few dozen nodes at most, depth 3), so a layered layout
written here is enough: nodes go into columns by the longest path from a
source, data flowing left to right (data → model → derived model →
evaluation or decision), and are ordered in each column by the mean row of
their predecessors, the first sweep of Sugiyama's method. No maintained
Python library lays out a small DAG as SVG without the Graphviz binary
(pygraphviz and graphviz both drive ``dot``; networkx draws through
Matplotlib and no links), and the platform runs air-gapped with no extra
system package, hence this module.

The drawing is not the only way in: ``edge_sentences`` gives the same graph
as a list of sentences, which the page prints beside it (WCAG 1.1.1).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from registry.lineage import NodeType, Relation

NODE_WIDTH = 240
NODE_HEIGHT = 46
COLUMN_GAP = 60
ROW_GAP = 18
MARGIN = 8
LABEL_CHARS = 27

# Edges the registry states from the model's side ("was trained on") drawn
# the way the data flows, into the model.
_AGAINST_FLOW = {
    Relation.TRAINED_ON,
    Relation.FINE_TUNED_ON,
    Relation.EVALUATED_ON,
    Relation.PRODUCED_BY_RUN,
}

NODE_TYPES = {
    NodeType.MODEL_VERSION: gettext_lazy("Model version"),
    NodeType.DATASET_VERSION: gettext_lazy("Dataset version"),
    NodeType.TRAINING_RUN: gettext_lazy("Training run"),
    NodeType.EVALUATION: gettext_lazy("Evaluation"),
    NodeType.DECISION: gettext_lazy("Decision"),
    NodeType.MODIFICATION: gettext_lazy("Modification assessment"),
}
RELATIONS = {
    Relation.BASE_OF: gettext_lazy("is the base of"),
    Relation.TRAINED_ON: gettext_lazy("was trained on"),
    Relation.FINE_TUNED_ON: gettext_lazy("was fine-tuned on"),
    Relation.EVALUATED_ON: gettext_lazy("was evaluated on"),
    Relation.PRODUCED_BY_RUN: gettext_lazy("was produced by run"),
    Relation.EVALUATED_BY: gettext_lazy("was evaluated by"),
    Relation.DECIDED_BY: gettext_lazy("was decided on by"),
    Relation.ASSESSED_BY: gettext_lazy("was assessed against its base by"),
}


@dataclass
class Placed:
    """A node with its place in the drawing."""

    node: dict
    column: int
    row: int
    url: str | None

    @property
    def x(self) -> int:
        return MARGIN + self.column * (NODE_WIDTH + COLUMN_GAP)

    @property
    def y(self) -> int:
        return MARGIN + self.row * (NODE_HEIGHT + ROW_GAP)


def node_links(graph: dict) -> dict[str, str]:
    """Portal pages of the model and dataset versions in a graph, by node id.

    Evaluations and decisions belong to governance, which adds their links.
    """
    links = {}
    for node in graph["nodes"]:
        kind, _sep, pk = node["id"].partition(":")
        if kind == NodeType.MODEL_VERSION:
            links[node["id"]] = reverse("governance_portal:version_detail", args=[pk])
        elif kind == NodeType.DATASET_VERSION:
            links[node["id"]] = reverse(
                "registry_portal:dataset_version_detail", args=[pk]
            )
    return links


def _flow_edges(graph: dict) -> list[tuple[str, str]]:
    nodes = {node["id"] for node in graph["nodes"]}
    flow = []
    for edge in graph["edges"]:
        source, target = edge["source"], edge["target"]
        if edge["relation"] in _AGAINST_FLOW:
            source, target = target, source
        if source in nodes and target in nodes and source != target:
            flow.append((source, target))
    return flow


def _columns(ids: list[str], flow: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layering; a cycle (never expected) stops after len(ids) rounds."""
    column = dict.fromkeys(ids, 0)
    for _round in range(len(ids)):
        changed = False
        for source, target in flow:
            if column[target] < column[source] + 1:
                column[target] = column[source] + 1
                changed = True
        if not changed:
            break
    return column


def layout(graph: dict, links: dict[str, str]) -> list[Placed]:
    """Every node of the graph placed in a column and a row."""
    ids = [node["id"] for node in graph["nodes"]]
    flow = _flow_edges(graph)
    column = _columns(ids, flow)
    predecessors = defaultdict(list)
    for source, target in flow:
        predecessors[target].append(source)
    by_id = {node["id"]: node for node in graph["nodes"]}
    row: dict[str, float] = {}
    placed = []
    for col in range(max(column.values(), default=-1) + 1):
        members = [i for i in ids if column[i] == col]
        members.sort(
            key=lambda i: (
                sum(row[p] for p in predecessors[i] if p in row)
                / max(1, len([p for p in predecessors[i] if p in row])),
                by_id[i]["label"],
            )
        )
        for index, node_id in enumerate(members):
            row[node_id] = index
            placed.append(Placed(by_id[node_id], col, index, links.get(node_id)))
    return placed


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _node_svg(place: Placed, root: str) -> SafeString:
    node = place.node
    kind = NODE_TYPES.get(node["type"], node["type"])
    is_root = node["id"] == root
    this = _("this version")
    caption = f"{kind} · {this}" if is_root else str(kind)
    title = f"{caption}: {node['label']}"
    box = format_html(
        '<rect x="{}" y="{}" width="{}" height="{}" rx="6" class="lineage__node '
        'lineage__node--{}{}"/>'
        '<text x="{}" y="{}" class="lineage__kind">{}</text>'
        '<text x="{}" y="{}" class="lineage__label">{}</text>',
        place.x, place.y, NODE_WIDTH, NODE_HEIGHT, node["type"],
        " lineage__node--root" if is_root else "",
        place.x + 10, place.y + 17, caption,
        place.x + 10, place.y + 36, _short(node["label"]),
    )  # fmt: skip
    if place.url is None:
        return format_html("<g><title>{}</title>{}</g>", title, box)
    # The link's name is its visible text (WCAG 2.5.3): no aria-label and no
    # <title>, which axe reads as visible text. Full labels are in the list.
    return format_html('<a href="{}">{}</a>', place.url, box)


def _edge_svg(source: Placed, target: Placed) -> SafeString:
    x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT // 2
    x2, y2 = target.x - 4, target.y + NODE_HEIGHT // 2
    middle = (x1 + x2) // 2
    return format_html(
        '<path d="M{} {} C{} {} {} {} {} {}" class="lineage__edge" '
        'marker-end="url(#lineage-arrow)"/>',
        x1, y1, middle, y1, middle, y2, x2, y2,
    )  # fmt: skip


def lineage_svg(graph: dict, links: dict[str, str], *, label: str) -> SafeString:
    """The graph as an ``<svg>`` whose nodes link to their pages."""
    placed = layout(graph, links)
    if not placed:
        return SafeString("")
    where = {place.node["id"]: place for place in placed}
    columns = max(place.column for place in placed) + 1
    rows = max(place.row for place in placed) + 1
    width = 2 * MARGIN + columns * NODE_WIDTH + (columns - 1) * COLUMN_GAP
    height = 2 * MARGIN + rows * NODE_HEIGHT + (rows - 1) * ROW_GAP
    edges = format_html_join(
        "",
        "{}",
        ((_edge_svg(where[s], where[t]),) for s, t in _flow_edges(graph)),
    )
    nodes = format_html_join(
        "", "{}", ((_node_svg(place, graph["root"]),) for place in placed)
    )
    return format_html(
        '<svg class="lineage" role="group" aria-label="{}" width="{}" height="{}" '
        'viewBox="0 0 {} {}" xmlns="http://www.w3.org/2000/svg">'
        '<defs><marker id="lineage-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
        '<path d="M0 0 L10 5 L0 10 z" class="lineage__arrow"/></marker></defs>'
        "{}{}</svg>",
        label, width, height, width, height, edges, nodes,
    )  # fmt: skip


def edge_sentences(graph: dict, links: dict[str, str]) -> list[dict]:
    """The edges as sentences (source, relation, target), each end with its link."""
    by_id = {node["id"]: node for node in graph["nodes"]}
    sentences = []
    for edge in graph["edges"]:
        source, target = by_id.get(edge["source"]), by_id.get(edge["target"])
        if source is None or target is None:
            continue
        sentences.append(
            {
                "source": source["label"],
                "source_url": links.get(source["id"]),
                "relation": RELATIONS.get(edge["relation"], edge["relation"]),
                "target": target["label"],
                "target_url": links.get(target["id"]),
            }
        )
    return sentences
