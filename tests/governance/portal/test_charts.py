"""The portal's server-side SVG charts: labelled, parseable, distinct per chart."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from governance.portal.charts import Bar, Point, bar_chart, scatter_chart

SVG = "{http://www.w3.org/2000/svg}"


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def test_bar_chart_is_an_accessible_svg_naming_every_value():
    markup = bar_chart(
        [Bar("accuracy", 0.8125), Bar("refusal rate", None)],
        title="Results <on> civitas-core",
        value_label="score",
    )
    root = _parse(markup)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby").split()
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert (title.get("id"), desc.get("id")) == (title_id, desc_id)
    assert title.text == "Results <on> civitas-core"
    assert desc.text == "accuracy: 0.8125, refusal rate: no value"
    # Labels are text (svg.fonttype none), so they are read and translated.
    texts = "".join(root.itertext())
    assert "accuracy" in texts and "0.8125" in texts and "—" in texts


def test_scatter_chart_labels_points_and_series():
    markup = scatter_chart(
        [Point("v1 fp32", 400.0, 0.81, "fp32"), Point("v1 int8", 100.0, 0.80, "int8")],
        title="Quality against size",
        x_label="size (MB)",
        y_label="accuracy",
        log_x=True,
    )
    root = _parse(markup)
    assert root.find(f"{SVG}desc").text == (
        "v1 fp32: size (MB) 400, accuracy 0.81; v1 int8: size (MB) 100, accuracy 0.8"
    )
    texts = "".join(root.itertext())
    for word in ("v1 fp32", "v1 int8", "size (MB)", "accuracy", "fp32", "int8"):
        assert word in texts


def test_two_charts_on_one_page_share_no_element_id():
    first = _parse(bar_chart([Bar("a", 1.0)], title="t", value_label="v"))
    second = _parse(bar_chart([Bar("a", 1.0)], title="t", value_label="v"))
    ids = lambda root: {e.get("id") for e in root.iter() if e.get("id")}  # noqa: E731
    assert ids(first) and not ids(first) & ids(second)


def test_charts_carry_no_inline_style_the_csp_would_drop():
    for markup in (
        bar_chart([Bar("accuracy", 0.5)], title="t", value_label="v"),
        scatter_chart(
            [Point("a", 1.0, 2.0, "quantised"), Point("b", 10.0, 3.0, "full")],
            title="t",
            x_label="x",
            y_label="y",
            log_x=True,
        ),
    ):
        assert "style=" not in markup and "<style" not in markup
        root = _parse(markup)
        fills = {e.get("fill") for e in root.iter() if e.get("fill")}
        assert "#ffffff" in fills  # the background, as an attribute
        assert root.get("stroke-linejoin") == "round"
