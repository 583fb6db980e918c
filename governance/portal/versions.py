"""The version page: everything known about one model version, in one place.

The model card, the facts read from the ONNX graph, the datasets and
licences, the lineage drawn as a graph of links, the evaluation results with
charts, the policy results rule by rule and the decision history. It lives in
governance because it shows governance's evidence beside the registry's
facts. Every read goes through a selector or a ``visible_to`` queryset, so a
reader sees only what the API would show them; another agency's private
version answers 404. A fixed number of queries whatever the catalogue size:
the lineage walk is bounded by its depth, the lists by ``select_related`` and
``prefetch_related``.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.utils.formats import number_format
from django.utils.translation import gettext as _

from governance.models import Decision, EvaluationRun, PolicyResult
from governance.portal.charts import Bar, bar_chart
from governance.portal.derivations import (
    evidence_rows,
    failure_explanation,
    may_derive,
)
from governance.portal.readable import policy_outcome_rows
from registry import lineage, selectors
from registry.models import ArtifactState, ModelVersionDataset
from registry.portal.catalogue import can_write_for
from registry.portal.lineage import edge_sentences, lineage_svg, node_links

RUNS_SHOWN = 10
POLICY_RESULTS_READ = 20


def _runs(user, version) -> list[dict]:
    """The latest runs, each with its metrics and, when it has any, a bar chart."""
    runs = (
        EvaluationRun.objects.visible_to(user)
        .filter(model_version=version)
        .select_related("suite")
        .prefetch_related("metrics")
        .order_by("-requested_at", "-id")[:RUNS_SHOWN]
    )
    shown = []
    for run in runs:
        metrics = list(run.metrics.all())
        chart = None
        if metrics:
            chart = bar_chart(
                [Bar(f"{m.task} · {m.name}", m.value) for m in metrics],
                title=_("Metrics of evaluation %(id)s on %(suite)s")
                % {"id": run.pk, "suite": run.suite},
                value_label=_("Value"),
            )
        shown.append({"run": run, "metrics": metrics, "chart": chart})
    return shown


def _policy_results(user, version) -> list[dict]:
    """The newest policy result of each use case of this version the user may read.

    Each with its outcomes as readable rows (``governance.portal.readable``).
    """
    results = (
        PolicyResult.objects.visible_to(user)
        .filter(model_version=version)
        .select_related("use_case")
        .order_by("-created_at", "-id")[:POLICY_RESULTS_READ]
    )
    newest: dict[int, PolicyResult] = {}
    for result in results:
        newest.setdefault(result.use_case_id, result)
    return [
        {"result": result, "rows": policy_outcome_rows(result)}
        for result in newest.values()
    ]


def _dataset_links(user, version) -> list[ModelVersionDataset]:
    """The version's datasets the user may read, with licence and data status."""
    return list(
        ModelVersionDataset.objects.filter(
            model_version=version,
            dataset_version__in=selectors.dataset_version_list(user).values("pk"),
        )
        .select_related("dataset_version__dataset__agency", "dataset_version__licence")
        .order_by("role", "id")
    )


def _graph(user, version) -> dict:
    """The lineage graph with a link for every node that has a page."""
    graph = lineage.model_version_lineage(version, user=user)
    links = node_links(graph)
    for edge in graph["edges"]:
        source = edge["source"]
        anchor = {
            lineage.Relation.EVALUATED_BY: "run",
            lineage.Relation.DECIDED_BY: "decision",
        }.get(edge["relation"])
        if anchor and source in links:
            pk = edge["target"].partition(":")[2]
            links[edge["target"]] = f"{links[source]}#{anchor}-{pk}"
    return {
        "svg": lineage_svg(graph, links, label=_("Lineage of %s") % version),
        "edges": edge_sentences(graph, links),
        "warnings": graph["warnings"],
        "truncated": graph["truncated"],
    }


def _grouped(number: int | None) -> str | None:
    """A count with the language's digit grouping (1,572,864 or 1 572 864)."""
    return None if number is None else number_format(number, force_grouping=True)


@login_required
def version_detail(request, pk: int):
    """The version page (GET /portal/versions/<id>/)."""
    user = request.user
    version = selectors.model_version_list(user).filter(pk=pk).first()
    if version is None:
        raise Http404
    decisions = (
        Decision.objects.visible_to(user)
        .filter(model_version=version)
        .select_related("use_case", "reviewer")
        .order_by("-decided_at", "-id")
    )
    can_write = can_write_for(user, version.model.agency_id)
    return render(
        request,
        "portal/versions/detail.html",
        {
            "version": version,
            "model": version.model,
            "licence": version.licence,
            "links": _dataset_links(user, version),
            "parameters": _grouped(version.parameter_count),
            "graph_io": [
                (_("Inputs of the graph"), version.graph_inputs),
                (_("Outputs of the graph"), version.graph_outputs),
            ],
            "graph": _graph(user, version),
            "runs": _runs(user, version),
            "policy_results": _policy_results(user, version),
            "decisions": decisions,
            "can_write": can_write,
            # A platform-derived version takes only the derivation's bundle.
            "can_upload": can_write
            and not version.derivation_settings
            and version.artifact_state in (ArtifactState.NONE, ArtifactState.FAILED),
            "can_attach": can_write
            and not version.is_released
            and not version.derivation_failed,
            "states": ArtifactState,
            "may_derive": may_derive(user, version),
            "quantisation": evidence_rows(version),
            "derivation_failure": failure_explanation(version),
        },
    )
