"""Portal pages of evaluation suites: the agency's own, the shared and built-in ones.

Reads use ``EvaluationSuite.objects.visible_to`` as the API does (another
agency's private suite is a 404); every write validates with the API's input
serializer and calls one service of ``governance.services.suites``, whose
refusals (``suite_in_use``, ``datasheet_missing``, ...) become form errors.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Case, Exists, IntegerField, OuterRef, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from config.exceptions import DomainError, PolicyViolation
from governance.api.serializers import (
    SuiteInputSerializer,
    SuiteUpdateSerializer,
    SuiteVersionInputSerializer,
)
from governance.models import EvaluationRun, EvaluationSuite
from governance.portal.forms import suites as suite_forms
from governance.services import suites as suite_services
from registry.models import DatasetVersion
from registry.selectors import user_agency_id, user_role

PAGE_SIZE = 50


def _suites(user):
    used = EvaluationRun.objects.filter(suite=OuterRef("pk"))
    return (
        EvaluationSuite.objects.visible_to(user)
        .select_related("licence", "agency", "previous")
        .annotate(is_used=Exists(used))
    )


def may_write(user, suite: EvaluationSuite | None = None) -> bool:
    """Whether to offer the write buttons; the service decides for real."""
    if user_role(user) not in suite_services.SUITE_WRITER_ROLES:
        return False
    return suite is None or (
        suite.agency_id is not None and suite.agency_id == user_agency_id(user)
    )


def _datasets(user):
    """The dataset versions a task may read: visible, with a file."""
    return (
        DatasetVersion.objects.visible_to(user)
        .exclude(storage_key="")
        .select_related("dataset__agency")
        .order_by("dataset__slug", "-created_at")
    )


@login_required
def suite_list(request: HttpRequest) -> HttpResponse:
    """The reader's agency's suites first, then the shared and built-in ones."""
    own = user_agency_id(request.user)
    suites = _suites(request.user).annotate(
        is_own=Case(
            When(agency_id=own, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
    )
    page = Paginator(suites.order_by("is_own", "name", "-created_at"), PAGE_SIZE)
    return render(
        request,
        "portal/suites/list.html",
        {
            "page": page.get_page(request.GET.get("page")),
            "own_agency_id": own,
            "may_create": may_write(request.user),
        },
    )


def _thresholds(suite: EvaluationSuite) -> list[dict]:
    return [
        {"metric": metric, "min": bounds.get("min"), "max": bounds.get("max")}
        for metric, bounds in suite.thresholds.items()
    ]


@login_required
def suite_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One suite: its tasks, metrics and thresholds, and every version of it."""
    suites = _suites(request.user)
    suite = get_object_or_404(suites, pk=pk)
    versions = list(suites.filter(name=suite.name).order_by("-created_at"))
    data = DatasetVersion.objects.select_related("dataset__agency", "licence").in_bulk(
        [entry["dataset_version"] for entry in suite.tasks]
    )
    tasks = [
        {**entry, "dataset": data.get(entry["dataset_version"])}
        for entry in suite.tasks
    ]
    return render(
        request,
        "portal/suites/detail.html",
        {
            "suite": suite,
            "tasks": tasks,
            "thresholds": _thresholds(suite),
            "versions": versions,
            "may_write": may_write(request.user, suite),
            "has_next": any(v.previous_id == suite.pk for v in versions),
        },
    )


def _status(exc: DomainError) -> int:
    return 403 if isinstance(exc, PolicyViolation) else 200


def _register(request, form, tasks, thresholds, *, serializer, call):
    """Validate form and rows with the API's serializer, then call the service."""
    rows_ok = tasks.is_valid() & thresholds.is_valid()
    if not (form.is_valid() and rows_ok):
        return None, 200
    payload = {**form.payload(), **suite_forms.rows_payload(tasks, thresholds)}
    data = suite_forms.validated(serializer, form, payload, request)
    if data is None:
        return None, 200
    try:
        return call(data), 200
    except DomainError as exc:
        suite_forms.add_domain_error(form, exc)
        return None, _status(exc)


@login_required
@require_http_methods(["GET", "POST"])
def suite_create(request: HttpRequest) -> HttpResponse:
    """Register a suite of the reader's agency (members and maintainers)."""
    datasets = _datasets(request.user)
    post = request.POST if request.method == "POST" else None
    form = suite_forms.SuiteForm(post)
    tasks = suite_forms.task_formset(post, datasets=datasets)
    thresholds = suite_forms.threshold_formset(post)
    status = 200
    if post is not None:
        suite, status = _register(
            request,
            form,
            tasks,
            thresholds,
            serializer=SuiteInputSerializer,
            call=lambda data: suite_services.suite_register(actor=request.user, **data),
        )
        if suite is not None:
            messages.success(
                request, _("Suite %(suite)s registered.") % {"suite": suite}
            )
            return redirect("governance_portal:suite-detail", pk=suite.pk)
    return render(
        request,
        "portal/suites/form.html",
        {"form": form, "tasks": tasks, "thresholds": thresholds, "suite": None},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def suite_version_create(request: HttpRequest, pk: int) -> HttpResponse:
    """Register a new version of a suite, starting from this one's fields."""
    suite = get_object_or_404(_suites(request.user), pk=pk)
    datasets = _datasets(request.user)
    post = request.POST if request.method == "POST" else None
    initial = {
        "description": suite.description,
        "licence": suite.licence.expression,
        "visibility": suite.visibility,
        "metrics": "\n".join(suite.metrics),
    }
    form = suite_forms.SuiteVersionForm(post, initial=initial)
    # Rows sent back are all taken as given: with ``initial`` an unchanged
    # prefilled row would count as empty and be dropped.
    tasks = suite_forms.task_formset(
        post,
        datasets=datasets,
        initial=None if post else suite_forms.task_initial(suite),
        extra=1,
    )
    thresholds = suite_forms.threshold_formset(
        post, initial=None if post else suite_forms.threshold_initial(suite), extra=2
    )
    status = 200
    if post is not None:
        new, status = _register(
            request,
            form,
            tasks,
            thresholds,
            serializer=SuiteVersionInputSerializer,
            call=lambda data: suite_services.suite_version_create(
                actor=request.user, suite=suite, **data
            ),
        )
        if new is not None:
            messages.success(
                request, _("Version %(suite)s registered.") % {"suite": new}
            )
            return redirect("governance_portal:suite-detail", pk=new.pk)
    return render(
        request,
        "portal/suites/form.html",
        {"form": form, "tasks": tasks, "thresholds": thresholds, "suite": suite},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def suite_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Change an unused suite's description, visibility, metrics or thresholds."""
    suite = get_object_or_404(_suites(request.user), pk=pk)
    post = request.POST if request.method == "POST" else None
    form = suite_forms.SuiteEditForm(
        post,
        initial={
            "description": suite.description,
            "visibility": suite.visibility,
            "metrics": "\n".join(suite.metrics),
        },
    )
    thresholds = suite_forms.threshold_formset(
        post, initial=None if post else suite_forms.threshold_initial(suite), extra=2
    )
    status = 200
    if post is not None and form.is_valid() & thresholds.is_valid():
        payload = {**form.payload(), **suite_forms.rows_payload(None, thresholds)}
        data = suite_forms.validated(SuiteUpdateSerializer, form, payload, request)
        if data is not None:
            try:
                suite_services.suite_update(actor=request.user, suite=suite, **data)
            except DomainError as exc:
                suite_forms.add_domain_error(form, exc)
                status = _status(exc)
            else:
                messages.success(
                    request, _("Suite %(suite)s changed.") % {"suite": suite}
                )
                return redirect("governance_portal:suite-detail", pk=suite.pk)
    return render(
        request,
        "portal/suites/edit.html",
        {"form": form, "thresholds": thresholds, "suite": suite},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def suite_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask, then delete an unused suite version of the reader's agency."""
    suite = get_object_or_404(_suites(request.user), pk=pk)
    if request.method == "GET":
        return render(request, "portal/suites/delete.html", {"suite": suite})
    label = str(suite)
    try:
        suite_services.suite_delete(actor=request.user, suite=suite)
    except PolicyViolation as exc:
        raise PermissionDenied(exc.message) from exc
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("governance_portal:suite-detail", pk=suite.pk)
    messages.success(request, _("Suite %(suite)s deleted.") % {"suite": label})
    return redirect("governance_portal:suite-list")
