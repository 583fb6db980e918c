"""Evaluation pages: ask for a run of a version, follow it live, read its results.

The request goes through ``governance.services.evaluations.evaluation_request``,
the service the API's ``POST /model-versions/{id}/evaluations/`` calls; the
run page polls a fragment (htmx) that stops polling once the run has ended.
Reads go through ``EvaluationRun.objects.visible_to``: a run the reader may
not see answers 404.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from config.exceptions import DomainError
from engine.evaluate import PERFORMANCE_METRICS
from governance.models import EvaluationRun, RunStatus
from governance.portal.charts import Bar, bar_chart
from governance.portal.forms.evaluations import (
    EvaluationFilterForm,
    EvaluationRequestForm,
)
from governance.rules.checks import run_energy_per_1k_tokens
from governance.services.evaluations import evaluation_cancel, evaluation_request
from registry.models import ModelVersion
from registry.selectors import is_oversight, user_agency_id

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
PAGE_SIZE = 25
# Failure codes a person meets most, in words; others show the engine's reason.
FAILURE_TITLES = {
    "worker_lost": gettext_lazy("The worker running the evaluation stopped."),
    "timeout": gettext_lazy("The evaluation ran past its time limit and was stopped."),
    "resource_limit": gettext_lazy("The evaluation ran out of its memory allowance."),
    "crashed": gettext_lazy("The evaluation process died without a result."),
    "refused": gettext_lazy("The bundle failed validation."),
    "data_error": gettext_lazy("The suite's task data are malformed."),
    "unsupported_task": gettext_lazy("This kind of model cannot run the task."),
    "bad_request": gettext_lazy("The evaluation request is inconsistent."),
    "failed": gettext_lazy("An unexpected error stopped the evaluation."),
}


def may_request(user, model_version: ModelVersion) -> bool:
    """Whether the page offers the request form (the service decides for real)."""
    return is_oversight(user) or user_agency_id(user) == model_version.model.agency_id


def _visible_runs(user):
    return EvaluationRun.objects.visible_to(user).select_related(
        "suite__agency", "model_version__model__agency", "requested_by"
    )


@require_http_methods(["GET", "POST"])
@login_required
def evaluation_request_view(request, pk: int):
    """Choose a suite and ask for an evaluation of one version."""
    version = get_object_or_404(
        ModelVersion.objects.visible_to(request.user).select_related("model__agency"),
        pk=pk,
    )
    if not may_request(request.user, version):
        raise PermissionDenied
    form = EvaluationRequestForm(
        request.POST if request.method == "POST" else None,
        user=request.user,
        model_version=version,
    )
    if request.method == "POST" and form.is_valid():
        try:
            run = evaluation_request(
                actor=request.user,
                model_version=version,
                suite=form.cleaned_data["suite"],
            )
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request, _("The evaluation is queued; this page follows it.")
            )
            return redirect("governance_portal:evaluation-detail", pk=run.pk)
    recent = _visible_runs(request.user).filter(model_version=version)[:5]
    return render(
        request,
        "portal/evaluations/request.html",
        {"version": version, "form": form, "recent": recent},
    )


def run_performance(run: EvaluationRun) -> dict:
    """The run's speed, energy and memory over all its tasks."""
    tokens = wall = 0.0
    peak = None
    methods = []
    for result in run.results or []:
        performance = result.get("performance") or {}
        if isinstance(performance.get("tokens"), int | float):
            tokens += performance["tokens"]
            wall += performance.get("wall_s") or 0.0
        rss = performance.get("peak_rss_bytes")
        if isinstance(rss, int | float):
            peak = max(peak or 0, rss / 2**20)
        method = performance.get("energy_method")
        if method and method not in methods:
            methods.append(method)
    energy, _methods = run_energy_per_1k_tokens(run)
    return {
        "tokens": int(tokens) if tokens else None,
        "tokens_per_s": tokens / wall if tokens and wall else None,
        "energy_j_per_1k_tokens": energy,
        "peak_rss_mb": peak,
        "energy_methods": methods,
        "wall_seconds": run.wall_seconds,
    }


def run_tasks(run: EvaluationRun) -> list[dict]:
    """Each task's quality metrics (with threshold verdicts) and its bar chart."""
    tasks = []
    for result in run.results or []:
        name = result.get("name") or result.get("task")
        verdicts = {
            t["metric"].partition(".")[2]: t for t in result.get("thresholds", [])
        }
        metrics = [
            {"name": metric, "value": value, "threshold": verdicts.get(metric)}
            for metric, value in (result.get("metrics") or {}).items()
            if metric not in PERFORMANCE_METRICS
        ]
        chart = None
        if metrics:
            chart = bar_chart(
                [Bar(m["name"], m["value"]) for m in metrics],
                title=_("Metrics of task %(task)s") % {"task": name},
                value_label=_("Value"),
            )
        tasks.append(
            {
                "name": name,
                "task": result.get("task"),
                "metrics": metrics,
                "chart": chart,
                "performance": result.get("performance") or {},
            }
        )
    return tasks


def mlflow_run_url(run_id: str) -> str:
    """The MLflow UI page of a run when the tracking store is a server, else ''."""
    uri = settings.MLFLOW_TRACKING_URI
    if not run_id or not uri.startswith(("http://", "https://")):
        return ""
    return f"{uri.rstrip('/')}/#/runs/{run_id}"


def _run_context(request, run: EvaluationRun) -> dict:
    finished = run.status in FINISHED
    context = {
        "run": run,
        "finished": finished,
        "may_cancel": not finished and may_request(request.user, run.model_version),
    }
    if run.status == RunStatus.SUCCEEDED:
        context["tasks"] = run_tasks(run)
        context["performance"] = run_performance(run)
        context["mlflow_url"] = mlflow_run_url(run.mlflow_run_id)
    if run.status == RunStatus.FAILED:
        context["failure_title"] = FAILURE_TITLES.get(run.failure_code, "")
    return context


@require_GET
@login_required
def evaluation_detail(request, pk: int):
    """One run: status and progress while it runs, its results once done."""
    run = get_object_or_404(_visible_runs(request.user), pk=pk)
    return render(request, "portal/evaluations/detail.html", _run_context(request, run))


@require_GET
@login_required
def evaluation_live(request, pk: int):
    """The changing part of the run page, which the page polls until the run ends."""
    run = get_object_or_404(_visible_runs(request.user), pk=pk)
    return render(request, "portal/evaluations/_live.html", _run_context(request, run))


@require_POST
@login_required
def evaluation_cancel_view(request, pk: int):
    """Cancel a queued or running evaluation of the reader's agency."""
    run = get_object_or_404(_visible_runs(request.user), pk=pk)
    if not may_request(request.user, run.model_version):
        raise PermissionDenied
    try:
        evaluation_cancel(actor=request.user, run=run)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("The evaluation was cancelled."))
    return redirect("governance_portal:evaluation-detail", pk=run.pk)


@require_GET
@login_required
def evaluation_list(request):
    """The agency's runs (every agency's for oversight), newest first, filterable."""
    user = request.user
    runs = _visible_runs(user)
    if not is_oversight(user):
        runs = runs.filter(model_version__model__agency_id=user_agency_id(user))
    form = EvaluationFilterForm(request.GET or None, user=user)
    if form.is_valid():
        data = form.cleaned_data
        if data["status"]:
            runs = runs.filter(status=data["status"])
        if data["suite"]:
            runs = runs.filter(suite__name=data["suite"])
        if data["model"]:
            runs = runs.filter(model_version__model__name__icontains=data["model"])
    page = Paginator(runs.order_by("-requested_at", "-pk"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "portal/evaluations/list.html",
        {
            "form": form,
            "page": page,
            "query": query.urlencode(),
            "oversight": is_oversight(user),
        },
    )
