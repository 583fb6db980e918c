"""The public transparency register in the portal, open to anyone without an account.

``/`` lists the register (search, filters, pages), ``/register/<id>/`` shows one
entry with the incident-report form, ``/register.csv`` downloads the records.
The records come from ``governance.register``, as the JSON API's do.

The list is mounted at the site root under the un-namespaced name ``home``
(the frame's brand link and ``LOGIN_URL`` pages point to it): config.urls
includes ``urlpatterns`` of this module, since config imports no app; every
other route is in ``governance.portal.urls`` (namespace ``governance_portal``).
"""

from __future__ import annotations

import csv
import hashlib
import math
import time

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import floatformat
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html_join
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from config.authentication import client_address
from config.exceptions import DomainError
from governance.exports.responses import export_response
from governance.exports.services import register_transparency_record
from governance.portal.forms.incidents import IncidentReportForm
from governance.register import (
    CSV_COLUMNS,
    RegisterQueryForm,
    csv_row,
    register_entries,
    register_entries_batched,
    register_use_case,
    register_use_cases,
)
from governance.services.incidents import incident_report_file

PAGE_SIZE = 25


def _query(request) -> tuple[RegisterQueryForm, dict]:
    """The search form of the request and the filters it yields (none if invalid)."""
    form = RegisterQueryForm(request.GET or None)
    if form.is_bound and form.is_valid():
        return form, form.cleaned_data
    return form, {}


def _summaries(entry) -> tuple[str, str]:
    """An entry's datasets and latest evaluations as two HTML lists (escaped).

    Built here rather than by nested template loops: at 25 entries a page the
    loops cost more than every query of the page (bench/register.py).
    """
    unpublished = _("A dataset its agency has not published")
    licence = _("licence")
    datasets = format_html_join(
        "",
        "<li>{} ({}; {} {}; {})</li>",
        (
            (
                f"{d.name} {d.version}" if d.is_public else unpublished,
                d.role_label,
                licence,
                d.licence,
                d.personal_data_label,
            )
            for d in entry.datasets
        ),
    )
    runs = format_html_join(
        "",
        "<li><strong>{}@{}</strong>{}: {}</li>",
        (
            (
                run.suite,
                run.suite_version,
                f" ({date_format(run.finished_at, 'SHORT_DATE_FORMAT')})"
                if run.finished_at
                else "",
                "; ".join(
                    f"{m.task}.{m.name} {floatformat(m.value, '-3')}"
                    for m in run.metrics
                ),
            )
            for run in entry.evaluations
        ),
    )
    return datasets, runs


@require_GET
def register_list(request):
    """The register: every entry in or out of service, searchable and filtered."""
    form, filters = _query(request)
    paginator = Paginator(register_use_cases(filters), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    kept = request.GET.copy()
    kept.pop("page", None)
    return render(
        request,
        "portal/public/register_list.html",
        {
            "form": form,
            "page": page,
            "entries": [
                (entry, *_summaries(entry))
                for entry in register_entries(page.object_list)
            ],
            "query_string": kept.urlencode(),
            "is_filtered": bool(filters),
        },
    )


def _entry_or_404(pk: int):
    use_case = register_use_case(pk)
    if use_case is None:
        raise Http404("No such entry in the register.")
    return use_case, register_entries([use_case])[0]


@require_GET
def register_entry_transparency_record(request, pk: int, kind: str):
    """The entry's transparency record (ATRS), JSON or HTML; public, not audited."""
    use_case = register_use_case(pk) if kind in ("json", "html") else None
    if use_case is None:
        raise Http404("No such entry in the register.")
    export = register_transparency_record(
        use_case=use_case,
        format="transparency-record-html" if kind == "html" else "transparency-record",
    )
    return export_response(export, inline=True)


@require_GET
def register_entry(request, pk: int):
    """One entry of the register, with the form to report an incident."""
    _use_case, entry = _entry_or_404(pk)
    form = IncidentReportForm(use_case_id=entry.id)
    return _entry_page(request, entry, form)


def _entry_page(request, entry, form, *, status: int = 200):
    return render(
        request,
        "portal/public/register_entry.html",
        {"entry": entry, "form": form},
        status=status,
    )


def _take_report_slot(request) -> int:
    """Take one report from the client address's budget; seconds to wait if none.

    Slots taken with ``cache.add`` in the shared cache (atomic: concurrent
    requests cannot share one), as ``config.authentication`` counts password
    attempts: at most ``CIVITAS_INCIDENT_REPORTS_PER_ADDRESS`` reports per
    address in any ``CIVITAS_INCIDENT_REPORT_WINDOW_SECONDS``.
    """
    limit = settings.CIVITAS_INCIDENT_REPORTS_PER_ADDRESS
    window = settings.CIVITAS_INCIDENT_REPORT_WINDOW_SECONDS
    ident = hashlib.sha256(client_address(request).encode()).hexdigest()[:32]
    names = [f"incident-report:{ident}:{index}" for index in range(limit)]
    taken = cache.get_many(names)
    now = time.time()
    for name in names:
        if name not in taken and cache.add(name, now + window, timeout=window):
            return 0
    frees_at = min(cache.get_many(names).values(), default=now + 1)
    return max(1, math.ceil(frees_at - now))


@require_http_methods(["POST"])
def incident_report_create(request, pk: int):
    """File a member of the public's incident report on an entry."""
    use_case, entry = _entry_or_404(pk)
    form = IncidentReportForm(request.POST, use_case_id=entry.id)
    if not form.is_valid():
        if form.is_spam:
            form.restamp()
        return _entry_page(request, entry, form, status=400)
    wait = _take_report_slot(request)
    if wait:
        minutes = max(1, math.ceil(wait / 60))
        form.add_error(
            None,
            _(
                "Too many reports from your network; try again in about "
                "%(minutes)s minute(s)."
            )
            % {"minutes": minutes},
        )
        response = _entry_page(request, entry, form, status=429)
        response["Retry-After"] = str(wait)
        return response
    try:
        report = incident_report_file(
            use_case=use_case,
            what_happened=form.cleaned_data["what_happened"],
            occurred_on=form.cleaned_data["occurred_on"],
            contact_email=form.cleaned_data["contact_email"],
        )
    except DomainError as exc:
        form.add_error(None, exc.message)
        return _entry_page(request, entry, form, status=400)
    messages.success(
        request,
        _(
            "Thank you. Your report was received with the reference %(ref)s; "
            "the oversight body's reviewers will read it."
        )
        % {"ref": f"IR-{report.pk}"},
    )
    return redirect(reverse("governance_portal:register-entry", args=[entry.id]))


class _Echo:
    """A file-like object whose write returns the line (csv.writer streams through)."""

    def write(self, value: str) -> str:
        return value


@require_GET
def register_csv(request):
    """The register's records as CSV, with the page's search and filters."""
    form, filters = _query(request)
    if form.is_bound and not form.is_valid():
        return HttpResponseBadRequest(
            "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()),
            content_type="text/plain; charset=utf-8",
        )
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for entry in register_entries_batched(register_use_cases(filters)):
            yield writer.writerow(csv_row(entry.as_record()))

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="civitas-register.csv"'
    return response


# The register list as the site's home page (see the module docstring).
urlpatterns = [path("", register_list, name="home")]
