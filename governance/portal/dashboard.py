"""The agency dashboard (``/portal/``): where staff land after signing in.

Agency staff see their own agency's figures; oversight reviewers (and
platform administrators) the same figures across every agency, as far as
they may read them. Every panel is one query over the tenancy querysets
(``visible_to``), so the page costs the same whatever the catalogue's size.
Open incident reports are those the public filed and no reviewer has
triaged yet (``IncidentStatus.NEW``).
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q, QuerySet
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from governance.models import (
    EvaluationRun,
    IncidentReport,
    IncidentStatus,
    RunStatus,
    UseCase,
    UseCaseStatus,
)
from governance.selectors import approvals_expiring, latest_policy_failures
from registry.models import AIModel, ModelVersion, VersionStatus
from registry.selectors import is_oversight, user_agency_id

# How far ahead an approval's end counts as "about to expire".
EXPIRY_WINDOW = timedelta(days=30)
# Rows per panel; the panels link to the full lists.
PANEL_ROWS = 10
IN_PROGRESS = (RunStatus.QUEUED, RunStatus.RUNNING)


def _own(queryset: QuerySet, user, agency_path: str) -> QuerySet:
    """Narrow a ``visible_to`` queryset to the user's agency, unless oversight."""
    if is_oversight(user):
        return queryset
    return queryset.filter(**{agency_path: user_agency_id(user)})


def runs_in_progress(user) -> QuerySet[EvaluationRun]:
    """Queued and running evaluations of the user's agency (every one: oversight)."""
    runs = _own(
        EvaluationRun.objects.visible_to(user), user, "model_version__model__agency_id"
    )
    return (
        runs.filter(status__in=IN_PROGRESS)
        .select_related("suite", "model_version__model__agency", "requested_by")
        .order_by("requested_at", "pk")
    )


def _models_by_status(user) -> tuple[list[AIModel], dict[str, int]]:
    """The most recently changed models with their versions counted by status."""
    counts = {
        status: Count("versions", filter=Q(versions__status=status))
        for status in VersionStatus.values
    }
    models = (
        _own(AIModel.objects.visible_to(user), user, "agency_id")
        .select_related("agency")
        .annotate(**{f"n_{status}": count for status, count in counts.items()})
        .order_by("-updated_at", "pk")[:PANEL_ROWS]
    )
    versions = _own(ModelVersion.objects.visible_to(user), user, "model__agency_id")
    totals = dict(versions.order_by().values_list("status").annotate(n=Count("pk")))
    return list(models), {status: totals.get(status, 0) for status in counts}


def _policy_failures(use_cases: QuerySet[UseCase]) -> list[dict]:
    """The latest failed policy result of each use case, with its failed rules."""
    return [
        {
            "result": result,
            "failed": [o for o in result.outcomes if o.get("status") == "failed"],
        }
        for result in latest_policy_failures(use_cases)[:PANEL_ROWS]
    ]


def open_incidents(user) -> QuerySet[IncidentReport]:
    """Untriaged reports on the user's agency's use cases (oversight: all of them)."""
    reports = _own(IncidentReport.objects.visible_to(user), user, "use_case__agency_id")
    return (
        reports.filter(status=IncidentStatus.NEW)
        .select_related("use_case__agency", "model_version__model")
        .order_by("-created_at", "-pk")
    )


def _awaiting_review(use_cases: QuerySet[UseCase]) -> dict[str, int]:
    counts = dict(
        use_cases.filter(status__in=[UseCaseStatus.SUBMITTED, UseCaseStatus.IN_REVIEW])
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    return {
        "submitted": counts.get(UseCaseStatus.SUBMITTED, 0),
        "in_review": counts.get(UseCaseStatus.IN_REVIEW, 0),
    }


@require_GET
@login_required
def dashboard(request):
    """The agency's models, runs, policy failures and approvals about to end."""
    user = request.user
    oversight = is_oversight(user)
    if not oversight and user_agency_id(user) is None:
        return render(request, "portal/dashboard/index.html", {"no_agency": True})
    use_cases = _own(UseCase.objects.visible_to(user), user, "agency_id")
    models, version_totals = _models_by_status(user)
    now = timezone.now()
    context = {
        "oversight": oversight,
        "models": models,
        "version_totals": version_totals,
        "runs": list(runs_in_progress(user)[:PANEL_ROWS]),
        "failures": _policy_failures(use_cases),
        "expiring": list(
            approvals_expiring(use_cases, before=now + EXPIRY_WINDOW)[:PANEL_ROWS]
        ),
        "expiry_days": EXPIRY_WINDOW.days,
        "incidents": list(open_incidents(user)[:PANEL_ROWS]),
        "awaiting": _awaiting_review(use_cases) if oversight else None,
    }
    return render(request, "portal/dashboard/index.html", context)


@require_GET
@login_required
def dashboard_runs(request):
    """The runs-in-progress panel alone, which the dashboard polls with htmx."""
    runs = list(runs_in_progress(request.user)[:PANEL_ROWS])
    return render(request, "portal/dashboard/_runs.html", {"runs": runs})
