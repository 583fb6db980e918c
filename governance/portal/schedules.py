"""Portal pages of evaluation schedules: list, create, re-time, switch on or off.

Reads use ``EvaluationSchedule.objects.visible_to`` as the API does: the
owning agency and oversight see a schedule, other agencies get 404. Writes
validate with the API's serializers and call ``schedule_create`` or
``schedule_update``; a schedule is never deleted (its ticks are evidence),
it is disabled. Each schedule's page shows its ticks, the runs they queued
and how each run compared with the one before.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_http_methods, require_POST

from config.exceptions import DomainError, PolicyViolation
from governance.api.schedules import ScheduleCreateSerializer, ScheduleTimingSerializer
from governance.models import (
    Comparison,
    EvaluationSchedule,
    EvaluationSuite,
    RunStatus,
    ScheduleOrigin,
    TickOutcome,
)
from governance.portal.forms import schedules as schedule_forms
from governance.portal.forms.suites import add_domain_error, validated
from governance.services.schedules import (
    schedule_create,
    schedule_period,
    schedule_update,
)
from registry.models import ModelVersion
from registry.selectors import user_agency_id
from registry.services.changes import UNSET

PAGE_SIZE = 50
TICKS_PER_PAGE = 25

# The words the pages use for each state, translated; a badge class beside it.
OUTCOMES = {
    TickOutcome.QUEUED: (gettext_lazy("run queued"), "ok"),
    TickOutcome.SKIPPED_BUSY: (gettext_lazy("skipped: a run was unfinished"), "muted"),
    TickOutcome.SKIPPED_SAME_SLOT: (
        gettext_lazy("skipped: this slot already ran"),
        "muted",
    ),
    TickOutcome.REFUSED: (gettext_lazy("refused"), "bad"),
}
COMPARISONS = {
    Comparison.PENDING: (gettext_lazy("not compared yet"), "info"),
    Comparison.NOT_COMPARED: (gettext_lazy("nothing to compare"), "muted"),
    Comparison.NO_BASELINE: (gettext_lazy("first run on this suite"), "info"),
    Comparison.IDENTICAL: (gettext_lazy("identical metrics"), "ok"),
    Comparison.WITHIN_TOLERANCE: (gettext_lazy("within tolerance"), "ok"),
    Comparison.ENGINE_CHANGED: (
        gettext_lazy("not comparable: engine or artifact changed"),
        "warn",
    ),
    Comparison.REPRODUCIBILITY_FAILED: (gettext_lazy("reproducibility failure"), "bad"),
}
RUN_STATES = {
    RunStatus.QUEUED: (gettext_lazy("queued"), "info"),
    RunStatus.RUNNING: (gettext_lazy("running"), "info"),
    RunStatus.SUCCEEDED: (gettext_lazy("succeeded"), "ok"),
    RunStatus.FAILED: (gettext_lazy("failed"), "bad"),
    RunStatus.CANCELLED: (gettext_lazy("cancelled"), "muted"),
}


def describe_timing(schedule: EvaluationSchedule) -> str:
    """The schedule's timing in words: "every 6 hours", "crontab 30 2 * * 1"."""
    if schedule.crontab:
        return _("crontab %(cron)s") % {"cron": schedule.crontab}
    seconds = schedule.interval_seconds or 0
    for size, words in (
        (86400, lambda n: ngettext("every day", "every %(n)s days", n)),
        (3600, lambda n: ngettext("every hour", "every %(n)s hours", n)),
        (60, lambda n: ngettext("every minute", "every %(n)s minutes", n)),
    ):
        if seconds and seconds % size == 0:
            return words(seconds // size) % {"n": seconds // size}
    return ngettext("every second", "every %(n)s seconds", seconds) % {"n": seconds}


def _tick_row(tick) -> dict:
    """A tick with the words and badges the history table shows."""
    return {
        "tick": tick,
        "outcome": OUTCOMES.get(tick.outcome, (tick.outcome, "muted")),
        "comparison": COMPARISONS.get(tick.comparison, (tick.comparison, "muted")),
        "run_state": RUN_STATES.get(tick.run.status, (tick.run.status, "muted"))
        if tick.run
        else None,
        "regressions": (tick.detail or {}).get("regressions") or [],
        "differences": (tick.detail or {}).get("differences") or [],
    }


def _schedules(user):
    return EvaluationSchedule.objects.visible_to(user).select_related(
        "suite", "model_version__model__agency", "created_by", "periodic_task"
    )


def next_run_at(schedule: EvaluationSchedule, now: datetime) -> datetime | None:
    """When beat fires the schedule next (None when it is switched off).

    An interval counts from beat's last run (or the schedule's creation); a
    crontab's next slot is after now. A time already past means "due now".
    """
    if not schedule.is_enabled:
        return None
    if schedule.crontab:
        return now + schedule_period(schedule, after=now)
    task = schedule.periodic_task
    start = (task.last_run_at if task else None) or schedule.created_at
    return max(start + schedule_period(schedule, after=start), now)


def may_edit(user, schedule: EvaluationSchedule) -> bool:
    """Whether to offer the write buttons; the service decides for real."""
    return (
        schedule.origin == ScheduleOrigin.AGENCY
        and user_agency_id(user) == schedule.model_version.model.agency_id
    )


@login_required
def schedule_list(request: HttpRequest) -> HttpResponse:
    """The schedules the reader may see, with their timing and next run."""
    schedules = _schedules(request.user).order_by("-created_at", "-id")
    page = Paginator(schedules, PAGE_SIZE).get_page(request.GET.get("page"))
    now = timezone.now()
    rows = [(s, describe_timing(s), next_run_at(s, now)) for s in page]
    return render(
        request,
        "portal/schedules/list.html",
        {
            "page": page,
            "rows": rows,
            "may_create": user_agency_id(request.user) is not None,
        },
    )


@login_required
def schedule_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One schedule and its run history: each tick, its run and its comparison."""
    schedule = get_object_or_404(_schedules(request.user), pk=pk)
    ticks = schedule.ticks.select_related("run", "baseline_run").order_by(
        "-ticked_at", "-id"
    )
    page = Paginator(ticks, TICKS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "portal/schedules/detail.html",
        {
            "schedule": schedule,
            "page": page,
            "ticks": [_tick_row(tick) for tick in page],
            "timing": describe_timing(schedule),
            "next_run_at": next_run_at(schedule, timezone.now()),
            "may_edit": may_edit(request.user, schedule),
        },
    )


def _status(exc: DomainError) -> int:
    return 403 if isinstance(exc, PolicyViolation) else 200


@login_required
@require_http_methods(["GET", "POST"])
def schedule_new(request: HttpRequest) -> HttpResponse:
    """Schedule evaluations of one of the agency's versions on a suite."""
    versions = (
        ModelVersion.objects.visible_to(request.user)
        .filter(model__agency_id=user_agency_id(request.user))
        .select_related("model__agency")
        .order_by("model__slug", "-created_at")
    )
    suites = EvaluationSuite.objects.visible_to(request.user).order_by(
        "name", "-created_at"
    )
    post = request.POST if request.method == "POST" else None
    form = schedule_forms.ScheduleForm(
        post, versions=versions, suites=suites, initial={"timing": "interval"}
    )
    status = 200
    if post is not None and form.is_valid():
        data = validated(ScheduleCreateSerializer, form, form.payload(), request)
        if data is not None:
            try:
                schedule = schedule_create(
                    actor=request.user,
                    model_version=data["model_version"],
                    suite=data["suite"],
                    interval_seconds=data.get("interval_seconds"),
                    crontab=data.get("crontab", ""),
                    is_enabled=data.get("is_enabled", True),
                )
            except DomainError as exc:
                add_domain_error(form, exc)
                status = _status(exc)
            else:
                messages.success(request, _("Schedule created."))
                return redirect("governance_portal:schedule-detail", pk=schedule.pk)
    return render(request, "portal/schedules/form.html", {"form": form}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def schedule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Re-time a schedule or switch it on or off."""
    schedule = get_object_or_404(_schedules(request.user), pk=pk)
    post = request.POST if request.method == "POST" else None
    form = schedule_forms.ScheduleTimingForm(
        post, initial=schedule_forms.timing_initial(schedule)
    )
    status = 200
    if post is not None and form.is_valid():
        data = validated(ScheduleTimingSerializer, form, form.payload(), request)
        if data is not None:
            changes = {key: data.get(key, UNSET) for key in data}
            try:
                schedule_update(actor=request.user, schedule=schedule, **changes)
            except DomainError as exc:
                add_domain_error(form, exc)
                status = _status(exc)
            else:
                messages.success(request, _("Schedule changed."))
                return redirect("governance_portal:schedule-detail", pk=schedule.pk)
    return render(
        request,
        "portal/schedules/edit.html",
        {"form": form, "schedule": schedule},
        status=status,
    )


@login_required
@require_POST
def schedule_toggle(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch a schedule on or off."""
    schedule = get_object_or_404(_schedules(request.user), pk=pk)
    try:
        updated = schedule_update(
            actor=request.user, schedule=schedule, is_enabled=not schedule.is_enabled
        )
    except PolicyViolation as exc:
        raise PermissionDenied(exc.message) from exc
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            _("Schedule enabled.") if updated.is_enabled else _("Schedule disabled."),
        )
    return redirect("governance_portal:schedule-detail", pk=schedule.pk)
