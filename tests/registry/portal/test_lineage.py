"""The lineage drawing: a layered layout, links on nodes, edges as sentences."""

from __future__ import annotations

from registry.portal.lineage import edge_sentences, layout, lineage_svg

GRAPH = {
    "root": "model_version:2",
    "nodes": [
        {"id": "model_version:2", "type": "model_version", "label": "city/a@2.0.0"},
        {"id": "model_version:1", "type": "model_version", "label": "city/a@1.0.0"},
        {"id": "dataset_version:5", "type": "dataset_version", "label": "city/q@1"},
        {"id": "training_run:abc", "type": "training_run", "label": "<b>abc</b>"},
        {"id": "evaluation:9", "type": "evaluation", "label": "small succeeded"},
    ],
    "edges": [
        {"source": "model_version:1", "target": "model_version:2",
         "relation": "base_of"},
        {"source": "model_version:2", "target": "dataset_version:5",
         "relation": "fine_tuned_on"},
        {"source": "model_version:2", "target": "training_run:abc",
         "relation": "produced_by_run"},
        {"source": "model_version:2", "target": "evaluation:9",
         "relation": "evaluated_by"},
    ],
}  # fmt: skip
LINKS = {
    "model_version:1": "/portal/versions/1/",
    "model_version:2": "/portal/versions/2/",
    "dataset_version:5": "/portal/dataset-versions/5/",
    "evaluation:9": "/portal/versions/2/#run-9",
}


def test_data_flows_left_to_right_in_layers():
    columns = {p.node["id"]: p.column for p in layout(GRAPH, LINKS)}
    assert columns["model_version:1"] == columns["dataset_version:5"] == 0
    assert columns["training_run:abc"] == 0
    assert columns["model_version:2"] == 1
    assert columns["evaluation:9"] == 2


def test_no_two_nodes_share_a_place():
    places = [(p.column, p.row) for p in layout(GRAPH, LINKS)]
    assert len(places) == len(set(places)) == 5


def test_nodes_with_a_page_are_links_and_labels_are_escaped():
    svg = str(lineage_svg(GRAPH, LINKS, label="Lineage"))
    for url in LINKS.values():
        assert f'<a href="{url}"' in svg
    assert svg.count("<a ") == 4  # the training run has no page
    assert "<b>abc</b>" not in svg and "&lt;b&gt;abc&lt;/b&gt;" in svg
    assert svg.count('class="lineage__edge"') == 4
    assert "this version" in svg and 'aria-label="Lineage"' in svg


def test_edges_read_as_sentences_with_links():
    sentences = edge_sentences(GRAPH, LINKS)
    first = sentences[0]
    assert (first["source"], str(first["relation"]), first["target"]) == (
        "city/a@1.0.0",
        "is the base of",
        "city/a@2.0.0",
    )
    assert first["source_url"] == "/portal/versions/1/"
    assert sentences[2]["target_url"] is None


def test_an_empty_graph_draws_nothing():
    assert (
        str(lineage_svg({"root": "x", "nodes": [], "edges": []}, {}, label="L")) == ""
    )
