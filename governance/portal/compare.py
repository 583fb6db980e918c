""" "The right model for the job": the versions that ran one suite, side by side.

For a suite, the latest succeeded run of every version the reader may see
(``EvaluationRun.objects.visible_to``) gives one row: the chosen quality
metric, the version's size, its speed, its energy per thousand tokens and
its memory. Three scatter plots (quality against size, against tokens per
second, against energy) show when a smaller or quantised version is good
enough; the table is their text alternative. Three queries whatever the
number of versions.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from engine.evaluate import PERFORMANCE_METRICS
from governance.models import EvaluationRun, EvaluationSuite, RunStatus
from governance.portal.charts import Point, scatter_chart
from governance.portal.evaluations import run_performance
from governance.portal.forms.evaluations import CompareForm


def latest_runs(user, suite: EvaluationSuite):
    """The latest succeeded run of ``suite`` of each version the user may see."""
    latest = (
        EvaluationRun.objects.filter(
            model_version=OuterRef("model_version"),
            suite=suite,
            status=RunStatus.SUCCEEDED,
        )
        .order_by("-finished_at", "-pk")
        .values("pk")[:1]
    )
    return (
        EvaluationRun.objects.visible_to(user)
        .filter(suite=suite, status=RunStatus.SUCCEEDED, pk=Subquery(latest))
        .select_related("model_version__model__agency")
        .prefetch_related("metrics")
    )


def _quality_metrics(runs) -> list[str]:
    return sorted(
        {
            f"{m.task}.{m.name}"
            for run in runs
            for m in run.metrics.all()
            if m.name not in PERFORMANCE_METRICS
        }
    )


def is_quantised(version) -> bool:
    return bool(version.quantisation) or version.derivation == "quantised"


def _rows(runs, metric: str, suite: EvaluationSuite) -> list[dict]:
    bounds = suite.thresholds.get(metric) or {}
    rows = []
    for run in runs:
        version = run.model_version
        values = {f"{m.task}.{m.name}": m.value for m in run.metrics.all()}
        quality = values.get(metric)
        meets = None
        if bounds and quality is not None:
            meets = quality >= bounds.get("min", quality) and quality <= bounds.get(
                "max", quality
            )
        rows.append(
            {
                "run": run,
                "version": version,
                "label": f"{version.model.name} {version.version}",
                "quantised": is_quantised(version),
                "quality": quality,
                "meets": meets,
                **run_performance(run),
            }
        )
    rows.sort(
        key=lambda r: (
            r["version"].parameter_count is None,
            r["version"].parameter_count or 0,
            r["label"],
        )
    )
    return rows


def _charts(rows: list[dict], metric: str) -> list[dict]:
    """Quality against size, speed and energy; points without both values left out."""
    quantised, full = _("quantised"), _("not quantised")
    axes = (
        (
            "parameters",
            _("Parameters (log scale)"),
            True,
            lambda r: r["version"].parameter_count,
        ),
        ("speed", _("Tokens per second"), False, lambda r: r["tokens_per_s"]),
        (
            "energy",
            _("Energy per thousand tokens (J)"),
            False,
            lambda r: r["energy_j_per_1k_tokens"],
        ),
    )
    charts = []
    for key, x_label, log_x, x_of in axes:
        points = [
            Point(
                label=row["label"],
                x=float(x_of(row)),
                y=row["quality"],
                series=quantised if row["quantised"] else full,
            )
            for row in rows
            if x_of(row) is not None and row["quality"] is not None
        ]
        title = _("%(metric)s against %(axis)s") % {"metric": metric, "axis": x_label}
        charts.append(
            {
                "key": key,
                "title": title,
                "svg": scatter_chart(
                    points, title=title, x_label=x_label, y_label=metric, log_x=log_x
                )
                if points
                else None,
            }
        )
    return charts


@require_GET
@login_required
def compare(request):
    """Pick a suite (and a metric); compare every visible version that ran it."""
    user = request.user
    # The metrics offered depend on the suite: the suite is checked first.
    picked = CompareForm({"suite": request.GET.get("suite")}, user=user)
    form = CompareForm(request.GET or None, user=user)
    context: dict = {"form": form}
    if request.GET and not picked.is_valid():
        form.is_valid()
    elif request.GET:
        suite = picked.cleaned_data["suite"]
        runs = list(latest_runs(user, suite))
        metrics = _quality_metrics(runs)
        form = CompareForm(request.GET, user=user, metrics=metrics)
        form.is_valid()
        default = next((m for m in suite.metrics if m in metrics), None)
        metric = (
            form.cleaned_data.get("metric")
            or default
            or (metrics[0] if metrics else "")
        )
        rows = _rows(runs, metric, suite) if metric else []
        context.update(
            form=form,
            suite=suite,
            metric=metric,
            threshold=suite.thresholds.get(metric),
            rows=rows,
            charts=_charts(rows, metric) if rows else [],
        )
    return render(request, "portal/compare/index.html", context)
