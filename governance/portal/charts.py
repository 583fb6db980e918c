"""Charts of the portal, drawn on the server as SVG with Matplotlib.

Matplotlib (already installed with MLflow) renders the figure; nothing is
loaded by the browser, so the charts work air-gapped and under the CSP that
allows no script. Each chart is an ``<svg role="img">`` with a ``<title>`` and
a ``<desc>`` naming what it shows; the page prints the same figures as a table
beside it, the text alternative WCAG asks for. Uses the object-oriented API
(``Figure``), never ``pyplot``'s global state, so concurrent requests do not
share a figure.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from matplotlib import rc_context
from matplotlib.figure import Figure

# Colours with at least 3:1 contrast on white (WCAG 1.4.11, graphics); the
# series are told apart by marker shape and by label too, never by colour alone.
_COLOURS = ("#0b4f8a", "#a4161a", "#1d6b34", "#7a4b00", "#5a2d82", "#1b1f24")
_MARKERS = ("o", "s", "^", "D", "v", "P")
_WIDTH_IN = 7.0


@dataclass(frozen=True)
class Bar:
    """One bar: its label and value (``None`` is drawn as a gap, "no value")."""

    label: str
    value: float | None


@dataclass(frozen=True)
class Point:
    """One point of a scatter plot, with the label printed beside it."""

    label: str
    x: float
    y: float
    series: str = ""


def _figure(height_in: float) -> Figure:
    figure = Figure(figsize=(_WIDTH_IN, height_in), dpi=72, layout="constrained")
    figure.patch.set_facecolor("white")
    return figure


_STYLE_ATTRIBUTE = re.compile(r'\sstyle="([^"]*)"')
_STYLE_ELEMENT = re.compile(r"<style[^>]*>.*?</style>", re.DOTALL)


def _presentation_attributes(match: re.Match) -> str:
    """One ``style="a: b; c: d"`` as ``a="b" c="d"`` (already XML-escaped)."""
    attributes = []
    for declaration in match.group(1).split(";"):
        name, _, value = declaration.partition(":")
        if name.strip() and value.strip():
            attributes.append(f' {name.strip()}="{value.strip()}"')
    return "".join(attributes)


def _without_inline_styles(markup: str) -> str:
    """Matplotlib's inline styles as SVG presentation attributes.

    The portal's CSP allows no inline style (``style-src 'self'`` and a
    nonce): a browser ignores every ``style`` attribute and ``<style>``
    element of the SVG, and draws each shape black. Presentation attributes
    (``fill``, ``stroke``, ``font-size``, ``text-anchor``...) are not styles
    and stay in force; the ``<style>`` element's defaults move to the root.
    """
    markup = _STYLE_ELEMENT.sub("", markup)
    markup = _STYLE_ATTRIBUTE.sub(_presentation_attributes, markup)
    return markup.replace(
        "<svg ", '<svg stroke-linejoin="round" stroke-linecap="butt" ', 1
    )


def _svg(figure: Figure, *, title: str, description: str) -> SafeString:
    """The figure as inline SVG markup, labelled for assistive technology.

    Matplotlib names the SVG's elements ``figure_1``, ``axes_1``, ...: every id
    (and every ``#id`` reference to it) is prefixed with the chart's own, so two
    charts on one page share no id.
    """
    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": "civitas", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    markup = buffer.getvalue()
    markup = _without_inline_styles(markup[markup.index("<svg") :])
    ident = f"chart-{uuid.uuid4().hex[:12]}"
    ids = set(re.findall(r'\bid="([^"]+)"', markup))
    if ids:
        pattern = "|".join(
            re.escape(name) for name in sorted(ids, key=len, reverse=True)
        )
        markup = re.sub(rf'\bid="({pattern})"', rf'id="{ident}-\1"', markup)
        markup = re.sub(rf"#({pattern})(?=[\"')])", rf"#{ident}-\1", markup)
    label = (
        f'<title id="{ident}-t">{escape(title)}</title>'
        f'<desc id="{ident}-d">{escape(description)}</desc>'
    )
    head_end = markup.index(">") + 1
    markup = (
        markup[:head_end].replace(
            "<svg ",
            f'<svg role="img" aria-labelledby="{ident}-t {ident}-d" focusable="false" ',
            1,
        )
        + label
        + markup[head_end:]
    )
    # Matplotlib's own output; the title and description were escaped above.
    return mark_safe(markup)


def bar_chart(
    bars: Sequence[Bar], *, title: str, value_label: str, description: str = ""
) -> SafeString:
    """A horizontal bar chart (one bar per label), as labelled SVG."""
    height = 0.9 + 0.38 * max(1, len(bars))
    figure = _figure(height)
    axes = figure.add_subplot()
    labels = [bar.label for bar in bars]
    values = [bar.value if bar.value is not None else 0.0 for bar in bars]
    positions = range(len(bars))
    axes.barh(positions, values, color=_COLOURS[0], height=0.6)
    for position, bar in zip(positions, bars, strict=True):
        text = "—" if bar.value is None else f"{bar.value:.4g}"
        axes.annotate(
            text,
            (values[position], position),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=10,
        )
    axes.set_yticks(list(positions), labels=labels)
    axes.invert_yaxis()
    axes.set_xlabel(value_label)
    axes.spines[["top", "right"]].set_visible(False)
    axes.margins(x=0.15)
    summary = description or ", ".join(
        f"{bar.label}: {'no value' if bar.value is None else f'{bar.value:.4g}'}"
        for bar in bars
    )
    return _svg(figure, title=title, description=summary)


def scatter_chart(
    points: Sequence[Point],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    description: str = "",
) -> SafeString:
    """A scatter plot, each point labelled; series differ by marker and colour."""
    figure = _figure(4.2)
    axes = figure.add_subplot()
    series = list(dict.fromkeys(point.series for point in points))
    for index, name in enumerate(series):
        members = [point for point in points if point.series == name]
        axes.scatter(
            [point.x for point in members],
            [point.y for point in members],
            marker=_MARKERS[index % len(_MARKERS)],
            color=_COLOURS[index % len(_COLOURS)],
            s=48,
            label=name or None,
        )
        for point in members:
            axes.annotate(
                point.label,
                (point.x, point.y),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=9,
            )
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(True, color="#c9d0d8", linewidth=0.6)
    axes.spines[["top", "right"]].set_visible(False)
    if any(series):
        axes.legend(frameon=False, fontsize=9)
    summary = description or "; ".join(
        f"{point.label}: {x_label} {point.x:.4g}, {y_label} {point.y:.4g}"
        for point in points
    )
    return _svg(figure, title=title, description=summary)
