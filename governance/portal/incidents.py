"""Oversight reviewers' pages for citizens' incident reports: list, triage, suspend.

Only oversight (reviewers and platform administrators) reads these pages;
anyone else signed in gets 403, the public is sent to sign in. Triage and
suspension are taken by ``services.incidents.incident_report_triage``, whose
rules (reviewers only, the suspension's four-eyes rules) answer as form
errors.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from config.exceptions import DomainError
from governance.models import IncidentReport, IncidentStatus
from governance.portal.forms.incidents import TriageForm
from governance.register import register_use_case
from governance.services.incidents import TRIAGE_TRANSITIONS, incident_report_triage
from registry.selectors import is_oversight

PAGE_SIZE = 25


def _require_oversight(request) -> None:
    if not is_oversight(request.user):
        raise PermissionDenied("Only the oversight body triages incident reports.")


def _reports(user):
    return IncidentReport.objects.visible_to(user).select_related(
        "use_case__agency", "model_version__model", "triaged_by"
    )


@login_required
def incident_list(request):
    """Every incident report, newest first, filterable by status."""
    _require_oversight(request)
    status = request.GET.get("status", "")
    reports = _reports(request.user)
    if status in IncidentStatus.values:
        reports = reports.filter(status=status)
    else:
        status = ""
    page = Paginator(reports.order_by("-created_at", "-id"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "portal/incidents/incident_list.html",
        {
            "page": page,
            "status": status,
            "statuses": IncidentStatus.choices,
            "query_string": f"status={status}" if status else "",
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def incident_detail(request, pk: int):
    """One report with its contact details, and the triage form."""
    _require_oversight(request)
    report = get_object_or_404(_reports(request.user), pk=pk)
    can_triage = report.status in TRIAGE_TRANSITIONS
    form = TriageForm(request.POST or None) if can_triage else None
    if request.method == "POST" and form is not None and form.is_valid():
        try:
            incident_report_triage(
                actor=request.user,
                report=report,
                status=form.cleaned_data["status"],
                note=form.cleaned_data["note"],
                suspend=form.cleaned_data["suspend"],
            )
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                _("The report is now %(status)s.")
                % {"status": IncidentStatus(form.cleaned_data["status"]).label},
            )
            return redirect(reverse("governance_portal:incident-detail", args=[pk]))
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "portal/incidents/incident_detail.html",
        {
            "report": report,
            "form": form,
            "in_register": register_use_case(report.use_case_id) is not None,
            "can_suspend": report.use_case.status == "approved",
        },
        status=status,
    )
